//! One training step per method on the MNIST MLP (784-100-100-10) at batch 10: the method's
//! `loss`, `zero_grad`, `backward`, `after_backward` and the SGD step, exactly as the trainer
//! runs them.
//!
//! Naive fine-tuning and every registered rehearsal method (the registry's `Rehearsal` family,
//! each from its documented example) run in their steady state: GEM with 20 finished tasks of
//! 256 memories each, A-GEM with a full 5120-sample memory and 256-sample reference batches,
//! the reservoirs (replay, DER — its example is DER++ —, ER-ACE) full at 500 samples, and the
//! memories filled at task ends (iCaRL, GDumb, BiC, LUCIR, X-DER) after the stream's first four
//! tasks, each begun and ended. On CUDA the device is synchronised before the clock is read
//! (`iter_custom`), so the time is the device's, not the launch queue's.
//!
//! ```sh
//! source scripts/torch-env.sh && cargo bench -p retain-bench --bench rehearsal_step
//! ```
//!
//! CPU timings use one intra-op thread unless `RETAIN_BENCH_THREADS` says otherwise. Uses
//! real MNIST from `datasets/mnist` when present, else uniform noise of the same shape
//! (the cost of a step does not depend on pixel values).

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use retain_config::Experiment;
use retain_data::{ImageDataset, Split};
use retain_stream::transform::TaskTransform;
use retain_stream::{SplitKind, Task, TaskStream};
use retain_train::{Method, Network, StepContext, TaskContext};
use tch::nn::OptimizerConfig as _;
use tch::{Cuda, Device, Kind, Tensor, nn};

const EXPERIMENT: &str = r#"
name = "bench"
seed = 0
device = "cpu"
[stream]
kind = "split"
dataset = "mnist"
tasks = 5
classes_per_task = 2
readouts = ["class_il"]
[model]
kind = "mlp"
hidden = [100, 100]
[training]
batch_size = 10
[training.optimizer]
kind = "sgd"
lr = 0.01
[method]
name = "naive"
"#;

/// Earlier tasks given to GEM and A-GEM before timing, and samples kept of each.
const PAST_TASKS: usize = 20;
const PER_TASK: usize = 256;
const BATCH: usize = 10;

fn dataset() -> ImageDataset {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets");
    if let Ok(data) = retain_data::load("mnist", &root) {
        return data;
    }
    eprintln!(
        "MNIST not found under {}: benchmarking on noise",
        root.display()
    );
    let split = |len: usize| Split {
        images: (0..len * 784)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect(),
        labels: (0..len).map(|i| (i % 10) as u8).collect(),
        len,
    };
    ImageDataset {
        name: "mnist".into(),
        classes: 10,
        shape: [1, 28, 28],
        train: split(60_000),
        test: split(1_000),
    }
}

/// Tasks standing in for 20 finished ones: consecutive chunks of the training split.
fn past_tasks(stream: &TaskStream) -> Vec<Task> {
    let device = stream.device;
    (0..PAST_TASKS)
        .map(|index| {
            let start = (index * PER_TASK) as i64;
            Task {
                index,
                classes: vec![],
                transform: TaskTransform::Identity,
                train_indices: (start..start + PER_TASK as i64).collect(),
                test_indices: Tensor::zeros([0], (Kind::Int64, device)),
                test_len: 0,
                validation_indices: Tensor::zeros([0], (Kind::Int64, device)),
                validation_len: 0,
                class_mask: Tensor::zeros([10], (Kind::Bool, device)),
            }
        })
        .collect()
}

/// The hyper-parameters that set a rehearsal method's steady state here: full memories of
/// [`PAST_TASKS`] × [`PER_TASK`] samples (A-GEM), [`PER_TASK`] per task (GEM), 500 slots
/// (reservoirs); every other key as in the method's documented example.
const STEADY_STATE: [(&str, i64); 3] = [
    ("memory_size", (PAST_TASKS * PER_TASK) as i64),
    ("memories_per_task", PER_TASK as i64),
    ("buffer_size", 500),
];

/// Naive fine-tuning (the reference) and every registered rehearsal method, with whether its
/// memory is episodic, growing with every finished task (GEM's per-task memories, A-GEM's):
/// those see [`PAST_TASKS`] synthetic finished tasks first, the others the stream's own
/// earlier tasks.
fn methods() -> Vec<(&'static str, bool, Box<dyn Method>)> {
    retain_methods::all()
        .filter(|d| d.name == "naive" || d.family == retain_methods::Family::Rehearsal)
        .map(|d| {
            let mut params: toml::Table = d.example.parse().unwrap();
            let episodic = d.param("memories_per_task").is_some() || d.name == "agem";
            for (key, value) in STEADY_STATE {
                if d.param(key).is_some() && (episodic || key == "buffer_size") {
                    params.insert(key.into(), toml::Value::Integer(value));
                }
            }
            (d.name, episodic, d.build(&params).unwrap())
        })
        .collect()
}

fn bench_device(c: &mut Criterion, data: &ImageDataset, device: Device) {
    let experiment = Experiment::from_source(EXPERIMENT, "rehearsal_step.rs", &[]).unwrap();
    let stream = TaskStream::build(data, &experiment.stream, 0, device).unwrap();
    let past = past_tasks(&stream);
    let current = stream.tasks.last().expect("five tasks");
    let batches: Vec<Tensor> = current
        .train_indices
        .chunks(BATCH)
        .take(100)
        .map(|chunk| Tensor::from_slice(chunk).to_device(device))
        .collect();
    let label = match device {
        Device::Cpu => "cpu".to_owned(),
        Device::Cuda(i) => format!("cuda{i}"),
        other => format!("{other:?}"),
    };
    let mut group = c.benchmark_group(format!("step/{label}"));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    for (name, episodic, mut method) in methods() {
        let network = Network::new(&experiment, &stream);
        let mut optimizer = nn::Sgd::default().build(&network.vars, 0.01).unwrap();
        // Memories filled at task ends see the past tasks first.
        let earlier = if episodic {
            &past[..]
        } else {
            &stream.tasks[..stream.tasks.len() - 1]
        };
        for task in earlier {
            method
                .before_task(&task_ctx(&network, &stream, task))
                .unwrap();
            method
                .after_task(&task_ctx(&network, &stream, task))
                .unwrap();
        }
        method
            .before_task(&task_ctx(&network, &stream, current))
            .unwrap();
        let mut next = 0usize;
        let key = Tensor::zeros([], (tch::Kind::Int64, device));
        let mut step = |method: &mut dyn Method, optimizer: &mut nn::Optimizer| {
            let indices = &batches[next % batches.len()];
            next += 1;
            let batch = stream.batch(SplitKind::Train, indices);
            let ctx = StepContext {
                network: &network,
                stream: &stream,
                task: current,
                device,
                step: next,
                epoch: 0,
                key: &key,
                indices,
                loss: Default::default(),
            };
            let loss = method.loss(&ctx, &batch).unwrap();
            optimizer.zero_grad();
            loss.backward();
            method.after_backward(&ctx).unwrap();
            optimizer.step();
        };
        // Steady state: the reservoirs are full (500 slots, 10 samples per step).
        for _ in 0..60 {
            step(method.as_mut(), &mut optimizer);
        }
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                synchronize(device);
                let clock = Instant::now();
                for _ in 0..iters {
                    step(method.as_mut(), &mut optimizer);
                }
                synchronize(device);
                clock.elapsed()
            })
        });
    }
    group.finish();
}

fn task_ctx<'a>(network: &'a Network, stream: &'a TaskStream, task: &'a Task) -> TaskContext<'a> {
    TaskContext {
        network,
        stream,
        task,
        device: stream.device,
        seed: 0,
        loss: Default::default(),
    }
}

fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        Cuda::synchronize(index as i64);
    }
}

fn benches(c: &mut Criterion) {
    // Intra-op threads for the CPU runs (default 1): with tiny ops, OpenMP barriers across
    // threads that share cores with other work make multi-threaded timings meaningless.
    let threads = std::env::var("RETAIN_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    tch::set_num_threads(threads);
    let data = dataset();
    bench_device(c, &data, Device::Cpu);
    if Cuda::is_available() {
        bench_device(c, &data, Device::Cuda(0));
    }
}

criterion_group!(rehearsal_step, benches);
criterion_main!(rehearsal_step);
