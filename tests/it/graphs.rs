//! CUDA-graph-captured training steps against eager ones, method by method.
//!
//! Every method that declares its step capturable is trained twice on CUDA on a reduced real
//! Split-MNIST (3 tasks of 2 classes, 200 training samples each, batch 10, one epoch, SGD):
//! with `[training] cuda_graph` off and on. The same seed on the same device must give the
//! same training: the same steps, epoch losses and final parameters to float tolerance, and
//! the same accuracy matrix. The graphed run must really replay graphs (most steps graphed,
//! no reason to fall back). Replay, DER and A-GEM cover the rehearsal memories, whose counters
//! and draws live on the device; LoRA, adapters, BitFit, name-selected PEFT and prompt and
//! prefix tuning cover the parameter-efficient family.
//!
//! The CUDA half runs where CUDA is visible; `RETAIN_REQUIRE_CUDA=1` makes its absence a
//! failure (the GPU bench script sets it). The CPU half checks the declarations themselves.

use std::collections::BTreeMap;
use std::path::PathBuf;

use retain_config::{Experiment, Readout};
use retain_stream::TaskStream;
use retain_train::{Method, Network, RunOutcome, Silent, TrainError};
use tch::{Device, Tensor};

type Factory = fn(&toml::Table) -> Result<Box<dyn Method>, TrainError>;

const MLP: &str = "kind = \"mlp\"\nhidden = [100, 100]";
const VIT: &str = "kind = \"vit\"\npatch = 7\ndim = 16\ndepth = 2\nheads = 2\nmlp_dim = 32";

/// (label, factory, `[method]` parameters, `[model]` table, learning rate).
const CAPTURABLE: &[(&str, Factory, &str, &str, f64)] = &[
    ("naive", retain_method_naive::from_params, "", MLP, 0.01),
    (
        "ewc",
        retain_method_ewc::from_params,
        "lambda = 100.0",
        MLP,
        0.01,
    ),
    (
        "online-ewc",
        retain_method_ewc::from_params_online,
        "lambda = 100.0",
        MLP,
        0.01,
    ),
    ("lwf", retain_method_lwf::from_params, "", MLP, 0.01),
    (
        "joint-cumulative",
        retain_method_joint::from_params_cumulative,
        "",
        MLP,
        0.01,
    ),
    (
        "replay",
        retain_method_replay::from_params,
        "buffer_size = 50\nreplay_batch_size = 10",
        MLP,
        0.01,
    ),
    (
        "replay-class-balanced",
        retain_method_replay::from_params,
        "buffer_size = 50\nreplay_batch_size = 10\nbuffer = \"class_balanced\"",
        MLP,
        0.01,
    ),
    (
        "der++",
        retain_method_der::from_params,
        "buffer_size = 50\nreplay_batch_size = 10\nalpha = 0.3\nbeta = 0.5",
        MLP,
        0.03,
    ),
    (
        "agem",
        retain_method_agem::from_params,
        "memory_size = 50\nmemory_batch_size = 10",
        MLP,
        0.01,
    ),
    (
        "lora",
        retain_method_lora::from_params,
        "rank = 4",
        MLP,
        0.01,
    ),
    (
        "adapter",
        retain_method_adapter::from_params,
        "width = 8",
        MLP,
        0.01,
    ),
    ("bitfit", retain_method_bitfit::from_params, "", MLP, 0.01),
    (
        "peft",
        retain_method_peft::from_params,
        "trainable = [\"head.*\", \"*.bias\"]",
        MLP,
        0.01,
    ),
    ("prompt", retain_method_prompt::from_params, "", VIT, 0.01),
    ("prefix", retain_method_prefix::from_params, "", VIT, 0.01),
];

/// Methods whose step reads the host or changes within a task: they must say so.
const EAGER: &[(&str, Factory)] = &[
    ("gem", retain_method_gem::from_params),
    ("unfreeze", retain_method_unfreeze::from_params),
];

fn table(source: &str) -> toml::Table {
    source.parse().unwrap()
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
    factory: Factory,
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
    let mut method = factory(&table(params)).unwrap();
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
    for (label, factory, params, _, _) in CAPTURABLE {
        let method = factory(&table(params)).unwrap();
        assert!(method.capturable(), "{label} should run captured");
    }
    for (label, factory) in EAGER {
        let method = factory(&table("")).unwrap();
        assert!(!method.capturable(), "{label} must run eagerly");
    }
}

#[test]
fn graphed_runs_train_as_eager_runs_do_for_every_capturable_method() {
    if !tch::Cuda::is_available() {
        assert!(
            std::env::var_os("RETAIN_REQUIRE_CUDA").is_none(),
            "RETAIN_REQUIRE_CUDA is set but no CUDA device is visible"
        );
        eprintln!("skipped: no CUDA device");
        return;
    }
    let mut failures = Vec::new();
    for &(label, factory, params, model, lr) in CAPTURABLE {
        let (eager, eager_params) = train(factory, params, model, lr, false);
        let (graphed, graphed_params) = train(factory, params, model, lr, true);
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
