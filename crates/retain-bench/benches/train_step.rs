//! One training step per method; see the crate docs.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use retain_stream::{SplitKind, TaskStream};
use retain_train::testkit::{mnist, single_threaded, split_mnist, split_mnist_with, task_context};
use retain_train::{Method, Network, StepContext, TrainOptimizer, train_step};
use tch::Device;

const METHODS: [(&str, &str); 4] = [
    ("naive", r#"name = "naive""#),
    (
        "ewc",
        "name = \"ewc\"\nlambda = 100.0\nfisher_samples = 200",
    ),
    ("lwf", "name = \"lwf\"\nalpha = 1.0\ntemperature = 2.0"),
    ("joint", r#"name = "joint""#),
];

fn method(name: &str, params: &toml::Table) -> Box<dyn Method> {
    match name {
        "naive" => retain_method_naive::from_params(params),
        "ewc" => retain_method_ewc::from_params(params),
        "lwf" => retain_method_lwf::from_params(params),
        _ => retain_method_joint::from_params(params),
    }
    .unwrap()
}

fn bench_device(c: &mut Criterion, device: Device, label: &str) {
    let data = mnist();
    let mut group = c.benchmark_group(format!("train_step/{label}"));
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, toml) in METHODS {
        // The SGD of experiments/split-mnist.toml, at batch 10.
        let experiment = split_mnist(
            2,
            1000,
            100,
            0,
            toml,
            &["training.optimizer.kind=sgd", "training.optimizer.lr=0.01"],
        );
        let stream = TaskStream::build(&data, &experiment.stream, 0, device).unwrap();
        let network = Network::new(&experiment, &stream);
        let mut method = method(name, &experiment.method.params);
        let mut optimizer = TrainOptimizer::new(&experiment.training, &network.vars).unwrap();

        let first = task_context(&network, &stream, 0);
        method.before_task(&first).unwrap();
        method.after_task(&first).unwrap();
        let second = task_context(&network, &stream, 1);
        method.before_task(&second).unwrap();
        let indices = method.training_indices(&second);
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
                        model: network.model.as_ref(),
                        vars: &network.vars,
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
