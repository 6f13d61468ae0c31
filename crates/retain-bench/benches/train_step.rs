//! One training step per registered method (the registry's every entry, built from its
//! documented example); see the crate docs.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use retain_config::Experiment;
use retain_data::ImageDataset;
use retain_stream::{SplitKind, TaskStream};
use retain_train::testkit::{mnist, single_threaded, split_mnist_with, task_context};
use retain_train::{Method, Network, StepContext, TrainOptimizer, train_step};
use tch::Device;

/// The models a method is benchmarked on, in order of preference: the MNIST MLP of
/// experiments/split-mnist.toml, then the default vision transformer for methods that need
/// one (prompts, prefixes).
const MODELS: [&str; 2] = ["kind = \"mlp\"\nhidden = [100, 100]", "kind = \"vit\""];

/// `descriptor`'s method after the first task of a two-task Split-MNIST (batch 10, the SGD of
/// experiments/split-mnist.toml), on the first model of [`MODELS`] it accepts; `None` when it
/// accepts none.
fn prepared(
    descriptor: &retain_methods::MethodDescriptor,
    data: &ImageDataset,
    device: Device,
) -> Option<(Experiment, TaskStream, Network, Box<dyn Method>)> {
    let method_toml = format!("name = \"{}\"\n{}", descriptor.name, descriptor.example);
    for model in MODELS {
        let experiment = split_mnist_with(
            model,
            2,
            1000,
            100,
            0,
            &method_toml,
            &["training.optimizer.kind=sgd", "training.optimizer.lr=0.01"],
        );
        let stream = TaskStream::build(data, &experiment.stream, 0, device).unwrap();
        let network = Network::new(&experiment, &stream);
        let mut method = descriptor.build(&experiment.method.params).unwrap();
        let first = task_context(&network, &stream, 0);
        let ready = method.before_task(&first).is_ok()
            && method.after_task(&first).is_ok()
            && method
                .before_task(&task_context(&network, &stream, 1))
                .is_ok();
        if ready {
            return Some((experiment, stream, network, method));
        }
    }
    eprintln!("{}: no benchmark model accepts it", descriptor.name);
    None
}

fn bench_device(c: &mut Criterion, device: Device, label: &str) {
    let data = mnist();
    let mut group = c.benchmark_group(format!("train_step/{label}"));
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for descriptor in retain_methods::all() {
        let name = descriptor.name;
        let Some((experiment, stream, network, mut method)) = prepared(descriptor, &data, device)
        else {
            continue;
        };
        let mut optimizer = TrainOptimizer::new(&experiment.training, &network.vars).unwrap();
        let second = task_context(&network, &stream, 1);
        let indices = method.training_indices(&second);
        if indices.len() < 10 {
            // SimpleCIL and the like: no training step to time.
            eprintln!("{name}: takes no training steps");
            continue;
        }
        let order = stream.epoch_order(&indices, 0, 1, 0);
        let batches = indices.len() as i64 / 10;
        let mut next = 0i64;
        let key = tch::Tensor::zeros([], (tch::Kind::Int64, device));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                synchronize(device);
                let start = Instant::now();
                for _ in 0..iters {
                    let batch_indices = order.narrow(0, next * 10, 10);
                    let batch = stream.batch(SplitKind::Train, &batch_indices);
                    next = (next + 1) % batches;
                    let ctx = StepContext {
                        network: &network,
                        stream: &stream,
                        task: &stream.tasks[1],
                        device,
                        step: 0,
                        epoch: 0,
                        key: &key,
                        indices: &batch_indices,
                        loss: Default::default(),
                    };
                    let _ = std::hint::black_box(train_step(
                        method.as_mut(),
                        &ctx,
                        &batch,
                        &mut optimizer,
                        retain_config::Precision::Fp32,
                    ));
                }
                synchronize(device);
                start.elapsed()
            })
        });
    }
    group.finish();
}

/// tch's Adam (libtorch's, a few kernels per tensor) against the flat Adam the trainer uses
/// (a few kernels in all), over a whole step (forward, loss, zero_grad, backward, update) of
/// fine-tuning at batch 32, on the MLP of the tests and on the default vision transformer.
fn bench_optimizers(c: &mut Criterion, device: Device, label: &str) {
    let data = mnist();
    let mut group = c.benchmark_group(format!("optimizer_step/{label}"));
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (model, model_toml) in [
        ("mlp", "kind = \"mlp\"\nhidden = [100, 100]"),
        ("vit", "kind = \"vit\""),
    ] {
        let experiment = split_mnist_with(model_toml, 2, 500, 100, 0, r#"name = "naive""#, &[]);
        let stream = TaskStream::build(&data, &experiment.stream, 0, device).unwrap();
        let indices: Vec<i64> = stream.tasks[0].train_indices.clone();
        let order = stream.epoch_order(&indices, 0, 0, 0);
        let batches = indices.len() as i64 / 32;
        for (optimizer, flat) in [("tch-adam", false), ("flat-adam", true)] {
            let network = Network::new(&experiment, &stream);
            // The trainer's construction, with either optimiser.
            let training = retain_config::TrainingConfig {
                optimizer: retain_config::OptimizerConfig::Adam {
                    lr: 1e-3,
                    weight_decay: 0.0,
                },
                flat_optimizer: flat,
                ..experiment.training.clone()
            };
            let mut adam = TrainOptimizer::new(&training, &network.vars).unwrap();
            let mut next = 0i64;
            group.bench_function(format!("{model}/{optimizer}"), |b| {
                b.iter_custom(|iters| {
                    synchronize(device);
                    let start = Instant::now();
                    for _ in 0..iters {
                        let batch = stream.batch(SplitKind::Train, &order.narrow(0, next * 32, 32));
                        next = (next + 1) % batches;
                        let loss = network
                            .model
                            .forward_t(&batch.inputs, true)
                            .cross_entropy_for_logits(&batch.labels);
                        adam.zero_grad();
                        loss.backward();
                        adam.step();
                    }
                    synchronize(device);
                    start.elapsed()
                })
            });
        }
    }
    group.finish();
}

fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

fn train_steps(c: &mut Criterion) {
    // One intra-op thread: on a small shared CPU, libtorch's threads only contend at this
    // model size (see `retain_train::testkit::single_threaded`).
    single_threaded();
    bench_device(c, Device::Cpu, "cpu");
    bench_optimizers(c, Device::Cpu, "cpu");
    if tch::Cuda::is_available() {
        bench_device(c, Device::Cuda(0), "cuda");
        bench_optimizers(c, Device::Cuda(0), "cuda");
    }
}

criterion_group!(benches, train_steps);
criterion_main!(benches);
