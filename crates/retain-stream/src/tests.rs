//! Unit tests of task streams, by concern; the helpers they share live here.

use super::*;
use retain_config::{
    Angles, AnglesName, AugmentConfig, ClassOrder, ClassOrderName, ClassesPerTask, DatasetName,
    EvaluateOn, Readout, SplitLabels, StreamConfig, StreamKind,
};
use retain_data::{ImageDataset, Split};
use tch::{Device, Tensor};

mod augmentation;
mod batches;
mod blurry;
mod domain;
mod increments;
mod plan;
mod split;

/// `classes` classes, `per_class` training samples each (half as many test samples), images
/// of `shape` whose pixels encode the sample index and position.
fn synthetic(name: &str, classes: usize, shape: [usize; 3], per_class: usize) -> ImageDataset {
    let features: usize = shape.iter().product();
    let split = |n: usize, salt: usize| {
        let len = n * classes;
        Split {
            images: (0..len * features)
                .map(|i| ((i * 7 + salt) % 251) as u8)
                .collect(),
            labels: (0..len).map(|i| (i % classes) as u8).collect(),
            len,
        }
    };
    ImageDataset {
        name: name.into(),
        classes,
        shape,
        train: split(per_class, 0),
        test: split(per_class / 2, 3),
    }
}

fn mnist_like(per_class: usize) -> ImageDataset {
    synthetic("mnist", 10, [1, 2, 2], per_class)
}

fn config(kind: StreamKind, tasks: usize) -> StreamConfig {
    StreamConfig {
        kind,
        dataset: DatasetName::Mnist,
        tasks,
        classes_per_task: (kind == StreamKind::Split).then_some(ClassesPerTask::Each(2)),
        first_task_classes: None,
        class_order: None,
        labels: None,
        blurry: None,
        first_task_unpermuted: false,
        angles: None,
        angle_range: None,
        train_samples_per_task: None,
        test_samples_per_task: None,
        validation_fraction: None,
        evaluate_on: EvaluateOn::Test,
        augment: None,
        readouts: kind.readouts().to_vec(),
    }
}

fn split_config(order: ClassOrder, train_limit: Option<usize>) -> StreamConfig {
    StreamConfig {
        class_order: Some(order),
        train_samples_per_task: train_limit,
        ..config(StreamKind::Split, 5)
    }
}

fn natural() -> ClassOrder {
    ClassOrder::Named(ClassOrderName::Natural)
}

fn build(order: ClassOrder, limit: Option<usize>, seed: u64) -> TaskStream {
    TaskStream::build(
        &mnist_like(20),
        &split_config(order, limit),
        seed,
        Device::Cpu,
    )
    .unwrap()
}

fn ints(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.flatten(0, -1)).unwrap()
}

fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

fn bytes(t: &Tensor) -> Vec<u8> {
    Vec::<u8>::try_from(t.flatten(0, -1)).unwrap()
}

fn permuted(tasks: usize, seed: u64, adjust: impl FnOnce(&mut StreamConfig)) -> TaskStream {
    let mut config = config(StreamKind::Permuted, tasks);
    adjust(&mut config);
    let dataset = synthetic("mnist", 10, [1, 4, 4], 6);
    TaskStream::build(&dataset, &config, seed, Device::Cpu).unwrap()
}

fn permutation_of(task: &Task) -> Vec<i64> {
    match &task.transform {
        TaskTransform::Permutation(p) => p.clone(),
        other => panic!("task {} is {other:?}", task.index),
    }
}

fn cifar_stream(augment: AugmentConfig) -> (ImageDataset, TaskStream) {
    let dataset = synthetic("cifar10", 10, [3, 6, 5], 4);
    let config = StreamConfig {
        dataset: DatasetName::Cifar10,
        augment: Some(augment),
        ..config(StreamKind::Split, 5)
    };
    let stream = TaskStream::build(&dataset, &config, 9, Device::Cpu).unwrap();
    (dataset, stream)
}
