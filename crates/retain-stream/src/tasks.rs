//! Building a stream from its plan: which classes, samples and transform each task has.

use retain_config::{
    Angles, AnglesName, ClassOrder, ClassOrderName, EvaluateOn, ICARL_CIFAR100_ORDER, Scenario,
    SplitLabels, StreamConfig, StreamPlan,
};
use retain_data::ImageDataset;
use tch::{Device, Tensor};

use crate::blurry::blurry_training_sets;
use crate::normalise::normalisation;
use crate::seed::{self, SplitMix64};
use crate::stream::DomainMaps;
use crate::{DeviceSplit, SplitKind, StreamError, Task, TaskStream, TaskTransform, transform};

impl TaskStream {
    /// Builds the stream described by `config` over `dataset`, on `device`: checks `config`
    /// and resolves its defaults ([`StreamConfig::plan`]), then [`TaskStream::from_plan`].
    pub fn build(
        dataset: &ImageDataset,
        config: &StreamConfig,
        master_seed: u64,
        device: Device,
    ) -> Result<Self, StreamError> {
        Self::from_plan(dataset, &config.plan()?, master_seed, device)
    }

    /// Builds the stream `plan` describes over `dataset`, on `device`.
    ///
    /// Class counts and image shapes are read from `dataset`, the data in hand, which for a
    /// real dataset are the plan's; so a stand-in with fewer classes than the plan needs is
    /// refused here ([`StreamError::NotEnoughClasses`]).
    pub fn from_plan(
        dataset: &ImageDataset,
        plan: &StreamPlan,
        master_seed: u64,
        device: Device,
    ) -> Result<Self, StreamError> {
        if dataset.name != plan.dataset().as_str() {
            return Err(StreamError::WrongDataset {
                expected: plan.dataset().as_str().to_owned(),
                found: dataset.name.clone(),
            });
        }
        let normalisation = normalisation(&dataset.name, device)?;
        let shape = dataset.shape;
        let features = shape.iter().product();

        // Per task: its classes and what it does to the images.
        let all_classes: Vec<i64> = (0..dataset.classes as i64).collect();
        let task_count = plan.tasks();
        let layout: Vec<(Vec<i64>, TaskTransform)> = match plan.scenario() {
            Scenario::Split {
                task_classes,
                class_order,
                ..
            } => {
                let needed: usize = task_classes.iter().sum();
                if needed > dataset.classes {
                    return Err(StreamError::NotEnoughClasses {
                        dataset: dataset.name.clone(),
                        needed,
                        available: dataset.classes,
                    });
                }
                // Task `t` takes the next `task_classes[t]` classes of the order.
                let order = self::class_order(class_order, dataset.classes, master_seed);
                let mut start = 0;
                task_classes
                    .iter()
                    .map(|&count| {
                        let classes = order[start..start + count]
                            .iter()
                            .map(|&c| i64::from(c))
                            .collect();
                        start += count;
                        (classes, TaskTransform::Identity)
                    })
                    .collect()
            }
            &Scenario::Permuted {
                first_task_unpermuted,
            } => (0..task_count)
                .map(|t| {
                    let transform = if t == 0 && first_task_unpermuted {
                        TaskTransform::Identity
                    } else {
                        TaskTransform::Permutation(transform::permutation(
                            master_seed,
                            t,
                            shape[1] * shape[2],
                        ))
                    };
                    (all_classes.clone(), transform)
                })
                .collect(),
            Scenario::Rotated {
                angles,
                angle_range,
            } => task_angles(angles, *angle_range, task_count, master_seed)
                .into_iter()
                .map(|angle| (all_classes.clone(), TaskTransform::Rotation(angle)))
                .collect(),
        };
        // Permuted and rotated streams: every task a transformed copy of the whole split.
        let domain = plan.kind().is_domain_incremental();
        // Split streams labelled within their tasks: each task's classes become labels
        // `0..classes_per_task`, shared by every task.
        let within_task = plan.labels() == SplitLabels::WithinTask;
        let num_classes = if within_task {
            plan.outputs()
        } else {
            dataset.classes
        };
        let fill = layout.iter().any(|(_, t)| t.needs_fill(shape));
        let train = DeviceSplit::upload(&dataset.train, features, fill, device);
        let test = DeviceSplit::upload(&dataset.test, features, fill, device);

        // The held-out validation samples: one seeded choice over the whole training split,
        // so a held-out image is never trained on, under any task's transform.
        let mut held_out = vec![false; train.len()];
        if let Some(fraction) = plan.validation_fraction() {
            let mut order: Vec<usize> = (0..train.len()).collect();
            SplitMix64::new(seed::derive(master_seed, "validation")).shuffle(&mut order);
            let count = ((fraction * train.len() as f64).round() as usize).clamp(1, train.len());
            for &i in &order[..count] {
                held_out[i] = true;
            }
        }

        // Within-task labels: the label of each dataset class (0 for a class in no task,
        // whose samples no task reads).
        let relabel: Option<Vec<u8>> = within_task.then(|| {
            let mut label = vec![0u8; dataset.classes];
            for (classes, _) in &layout {
                for (position, &class) in classes.iter().enumerate() {
                    label[class as usize] = position as u8;
                }
            }
            label
        });

        // Blurry boundaries: every task's training candidates, some of them moved in from
        // the other tasks' classes.
        let mut blurred: Option<Vec<Vec<i64>>> = plan.blurry().map(|percent| {
            let classes: Vec<Vec<i64>> = layout.iter().map(|(c, _)| c.clone()).collect();
            blurry_training_sets(
                &train.host_labels,
                &held_out,
                &classes,
                percent,
                master_seed,
            )
        });

        let mut tasks = Vec::with_capacity(layout.len());
        for (index, (classes, transform)) in layout.into_iter().enumerate() {
            // Stream index of stored sample `i` of a split of `n` samples in this task.
            let offset = |n: usize| if domain { (index * n) as i64 } else { 0 };
            let pick = |candidates: Vec<i64>,
                        limit: Option<usize>,
                        split: &'static str,
                        n: usize|
             -> Result<Vec<i64>, StreamError> {
                let mut indices = candidates;
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
                Ok(indices.into_iter().map(|i| i + offset(n)).collect())
            };
            let of_task = indices_of_classes(&train.host_labels, &classes);
            let (validation, training): (Vec<i64>, Vec<i64>) =
                of_task.into_iter().partition(|&i| held_out[i as usize]);
            let training = match &mut blurred {
                Some(sets) => std::mem::take(&mut sets[index]),
                None => training,
            };
            let train_indices = pick(
                training,
                plan.train_samples_per_task(),
                "train",
                train.len(),
            )?;
            let test_host = pick(
                indices_of_classes(&test.host_labels, &classes),
                plan.test_samples_per_task(),
                "test",
                test.len(),
            )?;
            let validation_host = if plan.validation_fraction().is_some() {
                pick(
                    validation,
                    plan.test_samples_per_task(),
                    "validation",
                    train.len(),
                )?
            } else {
                Vec::new()
            };
            // From here on the task's classes are labels of the stream's label space.
            let classes: Vec<i64> = match &relabel {
                Some(label) => classes
                    .iter()
                    .map(|&c| i64::from(label[c as usize]))
                    .collect(),
                None => classes,
            };
            let mut mask = vec![false; num_classes];
            for &c in &classes {
                mask[c as usize] = true;
            }
            tasks.push(Task {
                index,
                classes,
                transform,
                train_indices,
                test_len: test_host.len(),
                test_indices: Tensor::from_slice(&test_host).to_device(device),
                validation_len: validation_host.len(),
                validation_indices: Tensor::from_slice(&validation_host).to_device(device),
                class_mask: Tensor::from_slice(&mask).to_device(device),
            });
        }

        let mut class_tasks = vec![-1i64; num_classes];
        for task in &tasks {
            for &c in &task.classes {
                if class_tasks[c as usize] < 0 {
                    class_tasks[c as usize] = if domain || within_task {
                        0
                    } else {
                        task.index as i64
                    };
                }
            }
        }
        let (mut train, mut test) = (train, test);
        if let Some(label) = &relabel {
            train.relabel(label);
            test.relabel(label);
        }
        let class_tasks = Tensor::from_slice(&class_tasks).to_device(device);
        let domains = domain.then(|| {
            let maps: Vec<i64> = tasks
                .iter()
                .flat_map(|t| t.transform.gather_map(shape))
                .collect();
            DomainMaps {
                maps: Tensor::from_slice(&maps)
                    .view([tasks.len() as i64, features as i64])
                    .to_device(device),
            }
        });
        Ok(Self {
            dataset: dataset.name.clone(),
            kind: plan.kind(),
            train,
            test,
            tasks,
            num_classes,
            image_shape: shape,
            device,
            eval_split: match plan.evaluate_on() {
                EvaluateOn::Test => SplitKind::Test,
                EvaluateOn::Validation => SplitKind::Train,
            },
            augment: plan.augment(),
            augment_seed: seed::derive(master_seed, "augment"),
            normalisation,
            domains,
            class_tasks,
        })
    }
}

/// The angle of every task of a rotated stream, in degrees.
pub fn rotation_angles(config: &StreamConfig, master_seed: u64) -> Vec<f64> {
    task_angles(
        &config.angles(),
        config.angle_range(),
        config.tasks,
        master_seed,
    )
}

/// The angle in degrees of each of `tasks` tasks rotated by `angles`, generated angles within
/// `range` (a rotated stream's [`Scenario::Rotated`]).
pub fn task_angles(angles: &Angles, range: [f64; 2], tasks: usize, master_seed: u64) -> Vec<f64> {
    match angles {
        Angles::Explicit(angles) => angles.clone(),
        &Angles::Named(name) => (0..tasks)
            .map(|t| {
                transform::generated_angle(name == AnglesName::Seeded, range, master_seed, t, tasks)
            })
            .collect(),
    }
}

/// The class order of a split stream (`"icarl"` is CIFAR-100's, which validation checks).
pub fn class_order(order: &ClassOrder, classes: usize, master_seed: u64) -> Vec<u32> {
    let natural: Vec<u32> = (0..classes as u32).collect();
    match order {
        ClassOrder::Named(ClassOrderName::Natural) => natural,
        ClassOrder::Named(ClassOrderName::Seeded) => {
            let mut order = natural;
            SplitMix64::new(seed::derive(master_seed, "class-order")).shuffle(&mut order);
            order
        }
        ClassOrder::Named(ClassOrderName::Icarl) => ICARL_CIFAR100_ORDER.to_vec(),
        ClassOrder::Explicit(order) => order.clone(),
    }
}

/// Indices of the samples whose label is one of `classes`, ascending.
fn indices_of_classes(labels: &[u8], classes: &[i64]) -> Vec<i64> {
    labels
        .iter()
        .enumerate()
        .filter(|(_, label)| classes.contains(&i64::from(**label)))
        .map(|(i, _)| i as i64)
        .collect()
}
