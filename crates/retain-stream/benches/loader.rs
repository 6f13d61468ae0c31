//! Batches per second of the device-resident data path, against the training step it feeds.
//!
//! The data path (index gather, task transform, augmentation, normalisation) must stay far
//! cheaper than a training step, or the accelerator waits on data. Each group times one
//! batch of a stream and one optimiser step (forward, backward, update) of the model that
//! experiment trains, on the same device, so the ratio of the two lines is the margin:
//!
//! | data | stream | batch | model |
//! |---|---|---|---|
//! | MNIST-shaped, 60 000 × 1×28×28 | split, permuted, rotated | 10 | MLP 784-100-100-10 |
//! | CIFAR-shaped, 50 000 × 3×32×32 | split with crop + flip | 32 | ResNet-18 (nf 64) |
//!
//! Synthetic bytes stand in for the images (timing does not depend on their values). Every
//! measurement uses `iter_custom` and synchronises a CUDA device before reading the clock;
//! CUDA groups run only when a device is visible. `eval/…` times the evaluation batch of a
//! permuted or rotated task (one map over the pixels of the whole batch).
//!
//! On a CPU shared with other work, set `OMP_NUM_THREADS` to the cores actually free:
//! libtorch's OpenMP pool, oversubscribed, turns microseconds into milliseconds.
//!
//!     cargo bench -p retain-stream --bench loader

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use retain_config::{
    AugmentConfig, ClassesPerTask, DatasetName, EvaluateOn, ModelConfig, StreamConfig, StreamKind,
};
use retain_data::{ImageDataset, Split};
use retain_stream::{SplitKind, TaskStream};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Tensor};

fn synthetic(name: &str, shape: [usize; 3], train: usize) -> ImageDataset {
    let features: usize = shape.iter().product();
    let split = |len: usize| Split {
        images: (0..len * features)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect(),
        labels: (0..len).map(|i| (i % 10) as u8).collect(),
        len,
    };
    ImageDataset {
        name: name.into(),
        classes: 10,
        shape,
        train: split(train),
        test: split(1000),
    }
}

fn stream_config(kind: StreamKind, dataset: DatasetName) -> StreamConfig {
    StreamConfig {
        kind,
        dataset,
        tasks: 5,
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

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Times `iters` calls of `f`, synchronising the device before reading the clock.
fn timed(device: Device, iters: u64, mut f: impl FnMut(u64)) -> Duration {
    sync(device);
    let start = Instant::now();
    for i in 0..iters {
        f(i);
    }
    sync(device);
    start.elapsed()
}

/// One epoch order over a task's training samples, on the device, walked batch by batch.
struct Walker {
    order: Tensor,
    len: i64,
    batch: i64,
}

impl Walker {
    fn new(stream: &TaskStream, task: usize, batch: i64) -> Self {
        let indices = &stream.tasks[task].train_indices;
        let order = stream.epoch_order(indices, 0, task, 0);
        Self {
            len: indices.len() as i64,
            order,
            batch,
        }
    }

    fn indices(&self, i: u64) -> Tensor {
        let start = (i as i64 * self.batch) % (self.len - self.batch);
        self.order.narrow(0, start, self.batch)
    }
}

fn bench_loader(c: &mut Criterion, device: Device, name: &str, stream: &TaskStream, batch: i64) {
    let device_name = match device {
        Device::Cuda(i) => format!("cuda{i}"),
        _ => "cpu".to_owned(),
    };
    let walker = Walker::new(stream, stream.tasks.len() - 1, batch);
    let mut group = c.benchmark_group(format!("loader/{device_name}"));
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("{name}/b{batch}"), |b| {
        b.iter_custom(|iters| {
            timed(device, iters, |i| {
                let batch = stream.training_batch(&walker.indices(i), i);
                let _ = black_box(batch.inputs);
            })
        })
    });
    group.finish();
}

/// The evaluation path: a whole task's batch through the single-task transform.
fn bench_eval(c: &mut Criterion, device: Device, name: &str, stream: &TaskStream, batch: i64) {
    let device_name = match device {
        Device::Cuda(i) => format!("cuda{i}"),
        _ => "cpu".to_owned(),
    };
    let task = stream.tasks.len() - 1;
    let indices = stream.tasks[task].test_indices.narrow(0, 0, batch);
    let mut group = c.benchmark_group(format!("eval/{device_name}"));
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("{name}/b{batch}"), |b| {
        b.iter_custom(|iters| {
            timed(device, iters, |_| {
                let batch = stream.task_batch(SplitKind::Test, task, &indices);
                let _ = black_box(batch.inputs);
            })
        })
    });
    group.finish();
}

fn bench_step(
    c: &mut Criterion,
    device: Device,
    name: &str,
    model: &ModelConfig,
    stream: &TaskStream,
    batch: i64,
    samples: usize,
) {
    let device_name = match device {
        Device::Cuda(i) => format!("cuda{i}"),
        _ => "cpu".to_owned(),
    };
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let net = retain_models::build(model, &vs.root(), stream.image_shape, stream.num_classes);
    let mut optimizer = nn::Sgd::default().build(&vs, 0.01).unwrap();
    let walker = Walker::new(stream, 0, batch);
    let fixed = stream.batch(SplitKind::Train, &walker.indices(0));
    let mut group = c.benchmark_group(format!("step/{device_name}"));
    group.throughput(Throughput::Elements(1));
    group.sample_size(samples);
    group.bench_function(format!("{name}/b{batch}"), |b| {
        b.iter_custom(|iters| {
            timed(device, iters, |_| {
                let loss = net
                    .forward_t(&fixed.inputs, true)
                    .cross_entropy_for_logits(&fixed.labels);
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
            })
        })
    });
    group.finish();
}

fn loader(c: &mut Criterion) {
    let mut devices = vec![Device::Cpu];
    if tch::Cuda::is_available() {
        devices.push(Device::Cuda(0));
    }
    let mnist = synthetic("mnist", [1, 28, 28], 60_000);
    let cifar = synthetic("cifar10", [3, 32, 32], 50_000);
    let mlp = ModelConfig::Mlp {
        hidden: vec![100, 100],
        checkpoint: None,
        checkpoint_sha256: None,
        init: retain_config::InitScheme::Reference,
    };
    let resnet = ModelConfig::Resnet18 {
        nf: 64,
        checkpoint: None,
        checkpoint_sha256: None,
        init: retain_config::InitScheme::Reference,
    };
    for device in devices {
        let split = TaskStream::build(
            &mnist,
            &stream_config(StreamKind::Split, DatasetName::Mnist),
            0,
            device,
        )
        .unwrap();
        bench_loader(c, device, "mnist-split", &split, 10);
        bench_loader(c, device, "mnist-split", &split, 128);
        for kind in [StreamKind::Permuted, StreamKind::Rotated] {
            let stream =
                TaskStream::build(&mnist, &stream_config(kind, DatasetName::Mnist), 0, device)
                    .unwrap();
            bench_loader(c, device, &format!("mnist-{}", kind.as_str()), &stream, 10);
            bench_eval(
                c,
                device,
                &format!("mnist-{}", kind.as_str()),
                &stream,
                1000,
            );
        }
        bench_step(c, device, "mlp-784-100-100-10", &mlp, &split, 10, 100);
        drop(split);

        let config = StreamConfig {
            augment: Some(AugmentConfig {
                crop_padding: 4,
                flip: true,
            }),
            ..stream_config(StreamKind::Split, DatasetName::Cifar10)
        };
        let stream = TaskStream::build(&cifar, &config, 0, device).unwrap();
        bench_loader(c, device, "cifar-split-crop-flip", &stream, 32);
        bench_step(c, device, "resnet18-nf64", &resnet, &stream, 32, 10);
    }
}

criterion_group!(benches, loader);
criterion_main!(benches);
