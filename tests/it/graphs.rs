//! CUDA-graph-captured training steps against eager ones, method by method.
//!
//! Every method that declares its step capturable is trained twice on CUDA on a reduced real
//! Split-MNIST (3 tasks of 2 classes, 200 training samples each, batch 10, one epoch, SGD):
//! with `[training] cuda_graph` off and on. The same seed on the same device must give the
//! same training: the same steps, epoch losses and final parameters to float tolerance, and
//! the same accuracy matrix. The graphed run must really replay graphs (most steps graphed,
//! no reason to fall back). Replay, DER, A-GEM, ER-ACE, X-DER and the class-incremental
//! memories (iCaRL, GDumb, BiC) cover the rehearsal memories, whose counters and draws live on
//! the device; SI, MAS and RWalk the importance accumulated during training; LoRA, adapters,
//! BitFit, name-selected PEFT, prompt and prefix tuning, L2P, DualPrompt, CODA-Prompt and
//! InfLoRA the parameter-efficient family.
//!
//! The CUDA half runs where CUDA is visible; `RETAIN_REQUIRE_CUDA=1` makes its absence a
//! failure (the GPU bench script sets it). The CPU half checks the declarations themselves.

use std::collections::BTreeMap;
use std::path::PathBuf;

use retain_config::{Experiment, Readout};
use retain_stream::TaskStream;
use retain_train::{Method, Network, RunOutcome, Silent, TrainError};
use tch::{Device, Tensor};

use crate::common::dependency_present;

const MLP: &str = "kind = \"mlp\"\nhidden = [100, 100]";
const VIT: &str = "kind = \"vit\"\npatch = 7\ndim = 16\ndepth = 2\nheads = 2\nmlp_dim = 32";

/// (label, registered method, `[method]` parameters, `[model]` table, learning rate): every
/// method the registry declares capturable (checked below), some in two settings.
const CAPTURABLE: &[(&str, &str, &str, &str, f64)] = &[
    ("naive", "naive", "", MLP, 0.01),
    ("ewc", "ewc", "lambda = 100.0", MLP, 0.01),
    ("online-ewc", "online-ewc", "lambda = 100.0", MLP, 0.01),
    ("lwf", "lwf", "", MLP, 0.01),
    ("joint-cumulative", "joint-cumulative", "", MLP, 0.01),
    (
        "replay",
        "replay",
        "buffer_size = 50\nreplay_batch_size = 10",
        MLP,
        0.01,
    ),
    (
        "replay-class-balanced",
        "replay",
        "buffer_size = 50\nreplay_batch_size = 10\nbuffer = \"class_balanced\"",
        MLP,
        0.01,
    ),
    (
        "der++",
        "der",
        "buffer_size = 50\nreplay_batch_size = 10\nalpha = 0.3\nbeta = 0.5",
        MLP,
        0.03,
    ),
    (
        "agem",
        "agem",
        "memory_size = 50\nmemory_batch_size = 10",
        MLP,
        0.01,
    ),
    ("lora", "lora", "rank = 4", MLP, 0.01),
    ("adapter", "adapter", "width = 8", MLP, 0.01),
    ("bitfit", "bitfit", "", MLP, 0.01),
    (
        "peft",
        "peft",
        "trainable = [\"head.*\", \"*.bias\"]",
        MLP,
        0.01,
    ),
    ("joint", "joint", "", MLP, 0.01),
    ("joint-offline", "joint-offline", "", MLP, 0.01),
    ("qlora", "qlora", "rank = 4", MLP, 0.01),
    ("prompt", "prompt", "", VIT, 0.01),
    ("prefix", "prefix", "", VIT, 0.01),
    ("si", "si", "c = 1.0", MLP, 0.01),
    ("mas", "mas", "lambda = 1.0", MLP, 0.01),
    (
        "rwalk",
        "rwalk",
        "lambda = 1.0\nsamples_per_class = 5",
        MLP,
        0.01,
    ),
    (
        "er-ace",
        "er-ace",
        "buffer_size = 50\nreplay_batch_size = 10",
        MLP,
        0.01,
    ),
    (
        "xder",
        "xder",
        "buffer_size = 50\nreplay_batch_size = 10",
        MLP,
        0.01,
    ),
    ("icarl", "icarl", "memory_size = 60", MLP, 0.01),
    ("gdumb", "gdumb", "memory_size = 60", MLP, 0.01),
    (
        "bic",
        "bic",
        "memory_size = 60\nbias_epochs = 20",
        MLP,
        0.01,
    ),
    (
        "l2p",
        "l2p",
        "pool_size = 6\nlength = 2\ntop_n = 2",
        VIT,
        0.01,
    ),
    (
        "dualprompt",
        "dualprompt",
        "g_layers = [0]\ne_layers = [1]",
        VIT,
        0.01,
    ),
    (
        "coda-prompt",
        "coda-prompt",
        "pool_size = 6\nlength = 2\nlayers = [0, 1]",
        VIT,
        0.01,
    ),
    ("inflora", "inflora", "rank = 4", VIT, 0.01),
];

/// Methods whose step reads the host or changes within a task: they must say so.
const EAGER: &[(&str, &str)] = &[
    ("gem", "gem"),
    ("unfreeze", "unfreeze"),
    ("lucir", "lucir"),
    ("simplecil", "simplecil"),
];

fn table(source: &str) -> toml::Table {
    source.parse().unwrap()
}

/// The registered method `name` built from `params`.
fn build(name: &str, params: &str) -> Result<Box<dyn Method>, TrainError> {
    retain_methods::find(name)
        .unwrap_or_else(|| panic!("`{name}` is not registered"))
        .build(&table(params))
}

fn experiment(model: &str, lr: f64, cuda_graph: bool) -> Experiment {
    let source = format!(
        r#"
name = "graphs"
seed = 0
device = "cuda"

[stream]
kind = "split"
dataset = "mnist"
tasks = 3
classes_per_task = 2
train_samples_per_task = 200
test_samples_per_task = 200
readouts = ["class_il", "task_il"]

[model]
{model}

[training]
epochs = 1
batch_size = 10
eval_batch_size = 500
cuda_graph = {cuda_graph}

[training.optimizer]
kind = "sgd"
lr = {lr}

[method]
name = "naive"
"#
    );
    Experiment::from_source(&source, "graphs.rs", &[]).unwrap()
}

fn train(
    method: &str,
    params: &str,
    model: &str,
    lr: f64,
    cuda_graph: bool,
) -> (RunOutcome, BTreeMap<String, Tensor>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("datasets");
    let mnist = retain_data::load("mnist", &root)
        .unwrap_or_else(|e| panic!("MNIST is needed (run `just test`, which fetches it): {e}"));
    let experiment = experiment(model, lr, cuda_graph);
    let device = Device::Cuda(0);
    let stream = TaskStream::build(&mnist, &experiment.stream, experiment.seed, device).unwrap();
    let network = Network::new(&experiment, &stream);
    let mut method = build(method, params).unwrap();
    let outcome =
        retain_train::run(&experiment, &stream, &network, method.as_mut(), &mut Silent).unwrap();
    let params = network
        .vars
        .variables()
        .into_iter()
        .map(|(name, t)| (name, t.detach().to_device(Device::Cpu)))
        .collect();
    (outcome, params)
}

#[test]
fn capturable_methods_say_so_and_the_others_do_not() {
    for (label, name, params, _, _) in CAPTURABLE {
        let method = build(name, params).unwrap();
        assert!(method.capturable(), "{label} should run captured");
    }
    for (label, name) in EAGER {
        let method = build(name, "").unwrap();
        assert!(!method.capturable(), "{label} must run eagerly");
    }
    // The tables cover the registry: a newly registered method lands in one of them.
    let mut covered: Vec<&str> = CAPTURABLE
        .iter()
        .map(|c| c.1)
        .chain(EAGER.iter().map(|e| e.1))
        .collect();
    covered.sort_unstable();
    covered.dedup();
    let mut registered: Vec<&str> = retain_methods::all()
        .filter(|d| d.capabilities.capturable || EAGER.iter().any(|e| e.1 == d.name))
        .map(|d| d.name)
        .collect();
    registered.sort_unstable();
    assert_eq!(
        covered, registered,
        "every capturable method is compared graphed against eager"
    );
}

#[test]
fn graphed_runs_train_as_eager_runs_do_for_every_capturable_method() {
    if !dependency_present(
        "RETAIN_REQUIRE_CUDA",
        tch::Cuda::is_available(),
        "no CUDA device is visible",
    ) {
        return;
    }
    let mut failures = Vec::new();
    for &(label, method, params, model, lr) in CAPTURABLE {
        let (eager, eager_params) = train(method, params, model, lr, false);
        let (graphed, graphed_params) = train(method, params, model, lr, true);
        let e = &graphed.execution;
        // 3 tasks × 20 full batches: at least the warm-up steps are eager.
        let report = format!("{label}: {e:?}");
        eprintln!("{report}");
        if e.eager_reason.is_some() || e.graphed_steps < 3 * 10 {
            failures.push(format!("{report}: not replayed"));
            continue;
        }
        let losses = |o: &RunOutcome| -> Vec<f64> {
            o.tasks
                .iter()
                .flat_map(|t| t.epoch_losses.clone())
                .collect()
        };
        for (x, y) in losses(&eager).iter().zip(losses(&graphed)) {
            if (x - y).abs() > 1e-4 * x.abs().max(1.0) {
                failures.push(format!("{label}: epoch loss eager {x} vs graphed {y}"));
            }
        }
        for (name, value) in &eager_params {
            let diff = (value - &graphed_params[name])
                .abs()
                .max()
                .double_value(&[]);
            if diff > 1e-3 {
                failures.push(format!("{label}: {name} differs by {diff}"));
            }
        }
        for readout in [Readout::ClassIl, Readout::TaskIl] {
            let (a, b) = (
                eager.counts[&readout].accuracy().unwrap(),
                graphed.counts[&readout].accuracy().unwrap(),
            );
            if (a.acc() - b.acc()).abs() > 0.01 {
                failures.push(format!(
                    "{label} {readout:?}: ACC eager {} vs graphed {}",
                    a.acc(),
                    b.acc()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The fused CUDA kernels of the step's bookkeeping (the hash, augmentation draws, the
/// reservoir's slot rule, replay sampling) give the bits of the tensor operations they replace,
/// which the CPU runs: hashes of every kind of `int64` input (negative, beyond 32 bits), draws
/// for a device key, a reservoir fed batches whose rows collide in one slot, its replay draws.
/// The CPU half checks the tensor operations against the host hash.
#[test]
fn fused_kernels_give_the_bits_of_the_tensor_operations() {
    use retain_config::AugmentConfig;
    use retain_memory::{ClassBalanced, Reservoir};
    use retain_stream::{augment, hash};
    use tch::Kind;

    let host_hash = |x: &[i64]| -> Vec<i64> {
        x.iter()
            .map(|&v| i64::from(hash::hash32(v as u32)))
            .collect()
    };
    let inputs: Vec<i64> = (0..2000i64)
        .map(|i| i * 2_654_435_761 % (1 << 32))
        .collect();
    let cpu = Tensor::from_slice(&inputs);
    assert_eq!(
        Vec::<i64>::try_from(&hash::hash32_device(&cpu)).unwrap(),
        host_hash(&inputs)
    );
    let salted: Vec<i64> = inputs.iter().map(|v| v ^ 0x1234_5678).collect();
    assert_eq!(
        Vec::<i64>::try_from(&hash::hash32_xor(&cpu, 0x1234_5678)).unwrap(),
        host_hash(&salted)
    );
    if !dependency_present(
        "RETAIN_REQUIRE_CUDA",
        tch::Cuda::is_available(),
        "no CUDA device is visible",
    ) {
        return;
    }
    assert!(retain_graph::fused_available(), "fused kernels run on CUDA");
    let cuda = Device::Cuda(0);
    let back = |t: Tensor| Vec::<i64>::try_from(&t.to_device(Device::Cpu)).unwrap();
    // Any int64, not only 32-bit values: negatives and wide values take the same route.
    let wide: Vec<i64> = (0..4096i64)
        .map(|i| (i - 2048).wrapping_mul(0x9e37_79b9_7f4a_7c15_u64 as i64))
        .collect();
    let wide_cpu = Tensor::from_slice(&wide);
    let wide_cuda = wide_cpu.to_device(cuda);
    let key_cpu = Tensor::from(0x0bad_cafe_i64);
    let key_cuda = key_cpu.to_device(cuda);
    assert_eq!(
        back(hash::hash32_device(&wide_cuda)),
        back(hash::hash32_unfused(&wide_cpu))
    );
    assert_eq!(
        back(hash::hash32_xor(&wide_cuda, 77)),
        back(hash::hash32_xor(&wide_cpu, 77))
    );
    assert_eq!(
        back(hash::hash32_xor_tensor(&wide_cuda, &key_cuda)),
        back(hash::hash32_xor_tensor(&wide_cpu, &key_cpu))
    );
    let config = AugmentConfig {
        crop_padding: 4,
        flip: true,
    };
    let on_cuda = augment::params_keyed(&config, &key_cuda, 300, cuda);
    let on_cpu = augment::params(&config, 0x0bad_cafe, 300, Device::Cpu);
    assert_eq!(back(on_cuda.dy), back(on_cpu.dy));
    assert_eq!(back(on_cuda.dx), back(on_cpu.dx));
    assert_eq!(back(on_cuda.flip), back(on_cpu.flip));

    // A 50-slot reservoir keeping logits, fed 40 batches of 16 (rows collide once it is full).
    let mut reservoirs = [Device::Cpu, cuda].map(|d| Reservoir::new(50, Some(3), 7, d).unwrap());
    for batch in 0..40i64 {
        let indices = Tensor::arange_start(batch * 16, batch * 16 + 16, (Kind::Int64, Device::Cpu));
        let logits = indices.to_kind(Kind::Float).unsqueeze(1).repeat([1, 3]);
        for r in &mut reservoirs {
            let device = if r.indices().device().is_cuda() {
                cuda
            } else {
                Device::Cpu
            };
            r.add(&indices.to_device(device), Some(&logits.to_device(device)))
                .unwrap();
        }
        let [c, g] = &mut reservoirs;
        let (a, b) = (c.sample(10).unwrap(), g.sample(10).unwrap());
        assert_eq!(back(a.indices), back(b.indices), "batch {batch}");
        assert_eq!(
            Vec::<f32>::try_from(&a.logits.unwrap().flatten(0, -1)).unwrap(),
            Vec::<f32>::try_from(&b.logits.unwrap().to_device(Device::Cpu).flatten(0, -1)).unwrap()
        );
    }
    let [c, g] = &reservoirs;
    assert_eq!(back(c.indices()), back(g.indices()));

    // A class-balanced memory's draws (a mask of the filled slots, then the sort).
    let labels: Vec<u8> = (0..200).map(|i| (i % 4) as u8).collect();
    let indices: Vec<i64> = (0..200).collect();
    let mut memories = [Device::Cpu, cuda].map(|d| ClassBalanced::new(30, 11, d).unwrap());
    for m in &mut memories {
        m.add_task(&indices, &labels).unwrap();
    }
    let [c, g] = &mut memories;
    for _ in 0..5 {
        assert_eq!(
            back(c.sample(8).unwrap().indices),
            back(g.sample(8).unwrap().indices)
        );
    }
    // Every launch above ran fused: a failing one would have turned them off.
    assert!(
        retain_graph::fused_available(),
        "a fused launch failed (see its warning)"
    );
}
