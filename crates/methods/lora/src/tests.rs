use super::*;
use retain_config::{DatasetName, Experiment, Readout, StreamConfig};
use retain_stream::TaskStream;
use retain_train::testkit::{seeded_network, seeded_normal, synthetic_dataset, task_context};
use retain_train::{Selection, Silent, evaluate_with, run};
use tch::{Device, Kind};

const FEATURES: usize = 6;

/// Three tasks of two classes, 6 samples per class.
fn stream() -> TaskStream {
    let config = StreamConfig::split(
        DatasetName::Mnist,
        3,
        2,
        vec![Readout::ClassIl, Readout::TaskIl],
    );
    TaskStream::build(&synthetic_dataset(6, 6, FEATURES), &config, 0, Device::Cpu).unwrap()
}

/// MLP `6 → 8 → 7 → 6`.
fn network(seed: u64) -> Network {
    seeded_network(seed, |path| {
        Box::new(retain_models::Mlp::new(path, FEATURES, &[8, 7], 6))
    })
}

fn lora(toml: &str) -> Result<Lora, TrainError> {
    let table: toml::Table = toml::from_str(toml).unwrap();
    Lora::new(DESCRIPTOR.parse(&table)?)
}

/// A LoRA method built from `toml`, trained on [`stream`] over [`network`]`(seed)` with
/// [`experiment`]'s settings; returns the stream, the trained network and the method.
fn trained(seed: u64, toml: &str) -> (TaskStream, Network, Lora) {
    let stream = stream();
    let net = network(seed);
    let mut method = lora(toml).unwrap();
    run(&experiment(), &stream, &net, &mut method, &mut Silent).unwrap();
    (stream, net, method)
}

fn inputs() -> Tensor {
    seeded_normal(&[5, 1, 1, FEATURES as i64], 99)
}

fn snapshot(net: &Network) -> BTreeMap<String, Tensor> {
    net.vars
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect()
}

fn experiment() -> Experiment {
    experiment_with(r#"["class_il", "task_il"]"#)
}

/// [`experiment`] evaluating `readouts` (a TOML array).
fn experiment_with(readouts: &str) -> Experiment {
    Experiment::from_source(
        &format!(
            r#"
name = "lora-test"
device = "cpu"
[stream]
kind = "split"
dataset = "mnist"
tasks = 3
classes_per_task = 2
readouts = {readouts}
[model]
kind = "mlp"
hidden = [8, 7]
[training]
epochs = 3
batch_size = 4
[training.optimizer]
kind = "adam"
lr = 0.05
[method]
name = "lora"
"#
        ),
        "lora-test.toml",
        &[],
    )
    .unwrap()
}

const ALL_READOUTS: [Readout; 5] = [
    Readout::ClassIl,
    Readout::TaskIl,
    Readout::Merged,
    Readout::TaskInferred,
    Readout::TaskInference,
];
const ALL_READOUTS_TOML: &str =
    r#"["class_il", "task_il", "merged", "task_inferred", "task_inference"]"#;

#[test]
fn a_fresh_adapter_leaves_outputs_unchanged_and_freezes_the_backbone() {
    let stream = stream();
    let net = network(1);
    let xs = inputs();
    let before = net.model.forward_t(&xs, false);
    let mut method = lora("rank = 2\nalpha = 4.0").unwrap();
    assert_eq!(method.scale(), 2.0);
    method.before_task(&task_context(&net, &stream, 0)).unwrap();
    assert!(net.model.forward_t(&xs, false).equal(&before));
    let trained: Vec<(String, Vec<i64>)> = net
        .parameters()
        .into_iter()
        .map(|(n, t)| (n, t.size()))
        .collect();
    assert_eq!(
        trained,
        [
            ("head.bias".to_owned(), vec![6]),
            ("head.weight".to_owned(), vec![6, 7]),
            ("lora.hidden.0.a".to_owned(), vec![2, 6]),
            ("lora.hidden.0.b".to_owned(), vec![8, 2]),
            ("lora.hidden.1.a".to_owned(), vec![2, 8]),
            ("lora.hidden.1.b".to_owned(), vec![7, 2]),
        ]
    );
    let vars = net.vars.variables();
    for name in [
        "hidden.0.weight",
        "hidden.0.bias",
        "hidden.1.weight",
        "hidden.1.bias",
    ] {
        assert!(!vars[name].requires_grad(), "{name} is frozen");
    }
    // A is drawn within ±1/√inputs and is not all zero; B is zero.
    let a = &vars["lora.hidden.0.a"];
    assert!(a.abs().max().double_value(&[]) <= 1.0 / 6f64.sqrt());
    assert!(a.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    assert_eq!(
        vars["lora.hidden.0.b"]
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );
}

#[test]
fn training_changes_only_adapters_and_head_and_task_il_never_forgets() {
    let stream = stream();
    let net = network(2);
    let initial = snapshot(&net);
    let mut method = lora("rank = 2\nalpha = 2.0").unwrap();
    let outcome = run(&experiment(), &stream, &net, &mut method, &mut Silent).unwrap();
    let after = snapshot(&net);
    for name in [
        "hidden.0.weight",
        "hidden.0.bias",
        "hidden.1.weight",
        "hidden.1.bias",
    ] {
        assert!(after[name].equal(&initial[name]), "{name} is bit-identical");
    }
    for name in ["head.weight", "lora.hidden.0.b", "lora.hidden.1.b"] {
        assert!(after[name].abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
    assert!(!after["head.weight"].equal(&initial["head.weight"]));
    assert_eq!(method.stored_tasks(), 3);
    // The stored copies differ between tasks.
    let state = method.state();
    let b = |t: usize| {
        state
            .iter()
            .find(|(n, _)| *n == format!("task{t}.lora.hidden.0.b"))
            .unwrap()
            .1
            .shallow_clone()
    };
    assert!(!b(0).equal(&b(1)));
    // Task-IL counts of a finished task never change afterwards.
    let counts = &outcome.counts[&Readout::TaskIl];
    for task in 0..3 {
        for row in task + 2..=3 {
            assert_eq!(
                counts.cell(row, task),
                counts.cell(task + 1, task),
                "row {row}, task {task}"
            );
        }
    }
}

#[test]
fn merged_and_unmerged_forward_agree() {
    let (_, net, _) = trained(3, "rank = 3\nalpha = 6.0");
    let xs = inputs();
    let unmerged = net.model.forward_t(&xs, false);
    let v = net.vars.variables();
    let merged = |layer: &str| {
        &v[&format!("{layer}.weight")]
            + v[&format!("lora.{layer}.b")].matmul(&v[&format!("lora.{layer}.a")]) * 2.0
    };
    // The MLP by hand with the given hidden weight matrices.
    let by_hand = |w0: &Tensor, w1: &Tensor| {
        xs.flatten(1, -1)
            .linear(w0, Some(&v["hidden.0.bias"]))
            .relu()
            .linear(w1, Some(&v["hidden.1.bias"]))
            .relu()
            .linear(&v["head.weight"], Some(&v["head.bias"]))
    };
    let with_merged = by_hand(&merged("hidden.0"), &merged("hidden.1"));
    let worst = (&unmerged - &with_merged).abs().max().double_value(&[]);
    assert!(worst < 1e-5, "largest difference {worst}");
    // The adapters do change the outputs.
    let plain = by_hand(&v["hidden.0.weight"], &v["hidden.1.weight"]);
    assert!((&unmerged - &plain).abs().max().double_value(&[]) > 1e-3);
}

#[test]
fn selecting_a_task_swaps_in_its_weights_and_latest_restores() {
    let (_, net, mut method) = trained(4, "rank = 2");
    let xs = inputs();
    let latest = net.model.forward_t(&xs, false);
    let live = snapshot(&net);
    method.select(&net, Selection::Task(0)).unwrap();
    let first = net.model.forward_t(&xs, false);
    assert!(!first.equal(&latest));
    // The last task's copy is the live state.
    method.select(&net, Selection::Task(2)).unwrap();
    assert!(net.model.forward_t(&xs, false).equal(&latest));
    method.select(&net, Selection::Task(0)).unwrap();
    assert!(net.model.forward_t(&xs, false).equal(&first));
    method.select(&net, Selection::Latest).unwrap();
    let restored = snapshot(&net);
    for (name, value) in &live {
        assert!(restored[name].equal(value), "{name} restored");
    }
}

#[test]
fn state_round_trips_into_a_fresh_method() {
    let (stream, net, mut method) = trained(5, "rank = 2");
    let xs = inputs();
    method.select(&net, Selection::Task(1)).unwrap();
    let expected = net.model.forward_t(&xs, false);
    method.select(&net, Selection::Latest).unwrap();

    // The same weights in a fresh network, with the state loaded into a fresh method.
    let path = std::env::temp_dir().join(format!("lora-{}.safetensors", std::process::id()));
    net.save(&path).unwrap();
    let fresh = network(6);
    let mut restored = lora("rank = 2").unwrap();
    restored.load_state(method.state()).unwrap();
    restored
        .before_task(&task_context(&fresh, &stream, 0))
        .unwrap();
    fresh.load(&path).unwrap();
    restored.select(&fresh, Selection::Task(1)).unwrap();
    assert!(fresh.model.forward_t(&xs, false).equal(&expected));

    let error = lora("")
        .unwrap()
        .load_state(vec![("head.weight".into(), Tensor::from(1.0f32))])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `lora` failed: state key `head.weight` is not `task<N>.<variable>`"
    );
}

#[test]
fn bad_hyper_parameters_and_targets_are_refused() {
    let message = |r: Result<Lora, TrainError>| r.err().unwrap().to_string();
    assert_eq!(
        message(lora("rank = 0")),
        "invalid hyper-parameters for method `lora`: `rank` must be at least 1"
    );
    assert!(message(lora("alpha = -1.0")).contains("`alpha` must be finite and > 0"));
    assert!(message(lora("rnak = 4")).contains("unknown key `rnak`"));
    let stream = stream();
    let net = network(7);
    let error = lora("target = [\"conv*\"]")
        .unwrap()
        .before_task(&task_context(&net, &stream, 0))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `lora` failed: `method.target` pattern `conv*` matches no adaptable layer (the model has: head, hidden.0, hidden.1)"
    );
    let error = lora("target = [\"*\"]")
        .unwrap()
        .before_task(&task_context(&net, &stream, 0))
        .unwrap_err()
        .to_string();
    assert!(error.contains("selects the head `head`"), "{error}");
}

/// Largest absolute difference between two tensors.
fn worst(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Writes random values into every `B` so that a task's adapters change the outputs as
/// training would.
fn perturb_adapters(net: &Network, seed: u64) {
    let _no_grad = tch::no_grad_guard();
    for (name, var) in net.vars.variables() {
        if name.starts_with("lora.") && name.ends_with(".b") {
            let draw = seeded_normal(&var.size(), retain_seed::derive(seed, &name));
            var.shallow_clone().copy_(&(draw * 0.5));
        }
    }
}

#[test]
fn with_one_task_the_merged_weights_compute_what_the_adapters_do() {
    let stream = stream();
    let net = network(8);
    let mut method = lora("rank = 2\nalpha = 3.0").unwrap();
    method.before_task(&task_context(&net, &stream, 0)).unwrap();
    perturb_adapters(&net, 1);
    method.after_task(&task_context(&net, &stream, 0)).unwrap();
    let xs = inputs();
    let adapted = net.model.forward_t(&xs, false);
    let before = snapshot(&net);
    method.select(&net, Selection::Merged).unwrap();
    let merged = net.model.forward_t(&xs, false);
    assert!(
        worst(&merged, &adapted) < 1e-5,
        "{}",
        worst(&merged, &adapted)
    );
    // The weights hold the update now (the adapters are detached, or it would count twice).
    let vars = net.vars.variables();
    assert!(!vars["hidden.0.weight"].equal(&before["hidden.0.weight"]));
    method.select(&net, Selection::Latest).unwrap();
    let after = snapshot(&net);
    for (name, value) in &before {
        assert!(after[name].equal(value), "{name} restored bit for bit");
    }
    assert!(net.model.forward_t(&xs, false).equal(&adapted));
}

#[test]
fn merged_weights_sum_every_tasks_update_and_take_each_tasks_head_rows() {
    let (_, net, mut method) = trained(9, "rank = 2\nalpha = 4.0");
    let state: BTreeMap<String, Tensor> = method.state().into_iter().collect();
    let v = net.vars.variables();
    let merged = |layer: &str| {
        let update = (0..3)
            .map(|t| {
                state[&format!("task{t}.lora.{layer}.b")]
                    .matmul(&state[&format!("task{t}.lora.{layer}.a")])
            })
            .reduce(|x, y| x + y)
            .unwrap();
        &v[&format!("{layer}.weight")] + update * 2.0
    };
    // Task t owns classes 2t and 2t+1 (natural class order): its head gives their rows.
    let head = |part: &str| {
        let rows: Vec<Tensor> = (0..6)
            .map(|c| state[&format!("task{}.head.{part}", c / 2)].get(c))
            .collect();
        Tensor::stack(&rows, 0)
    };
    let xs = inputs();
    let by_hand = xs
        .flatten(1, -1)
        .linear(&merged("hidden.0"), Some(&v["hidden.0.bias"]))
        .relu()
        .linear(&merged("hidden.1"), Some(&v["hidden.1.bias"]))
        .relu()
        .linear(&head("weight"), Some(&head("bias")));
    method.select(&net, Selection::Merged).unwrap();
    let got = net.model.forward_t(&xs, false);
    assert!(worst(&got, &by_hand) < 1e-5, "{}", worst(&got, &by_hand));
    method.select(&net, Selection::Latest).unwrap();
}

#[test]
fn merged_and_inferred_readouts_leave_every_variable_bit_identical() {
    let stream = stream();
    let net = network(10);
    let mut method = lora("rank = 2").unwrap();
    let experiment = experiment_with(ALL_READOUTS_TOML);
    run(&experiment, &stream, &net, &mut method, &mut Silent).unwrap();
    let xs = inputs();
    let outputs = net.model.forward_t(&xs, false);
    let before = snapshot(&net);
    let state = method.state();
    evaluate_with(&net, &stream, &ALL_READOUTS, 5, 3, &mut method).unwrap();
    let after = snapshot(&net);
    assert_eq!(after.len(), before.len());
    for (name, value) in &before {
        assert!(after[name].equal(value), "{name} bit-identical");
    }
    for ((name, kept), (_, now)) in state.iter().zip(method.state()) {
        assert!(kept.equal(&now), "stored {name} unchanged");
    }
    // And the adapters are attached again.
    assert!(net.model.forward_t(&xs, false).equal(&outputs));
}

/// Six classes whose images each light one pixel of their own (the others stay below the
/// normalisation mean, so ReLU zeroes them): with an identity first layer the base features
/// of class `c` point along axis `c`, and every task's classes are far from the others'.
fn separated_stream() -> TaskStream {
    let mut dataset = synthetic_dataset(6, 6, FEATURES);
    for split in [&mut dataset.train, &mut dataset.test] {
        for i in 0..split.len {
            let class = split.labels[i] as usize;
            for k in 0..FEATURES {
                split.images[i * FEATURES + k] = if k == class {
                    (150 + (37 * i) % 100) as u8
                } else {
                    ((7 * i + 11 * k) % 30) as u8
                };
            }
        }
    }
    let config = StreamConfig::split(DatasetName::Mnist, 3, 2, ALL_READOUTS.to_vec());
    TaskStream::build(&dataset, &config, 0, Device::Cpu).unwrap()
}

#[test]
fn well_separated_tasks_are_inferred_exactly_and_read_out_as_with_the_true_id() {
    let stream = separated_stream();
    let net = seeded_network(11, |path| {
        Box::new(retain_models::Mlp::new(path, FEATURES, &[FEATURES], 6))
    });
    {
        let _no_grad = tch::no_grad_guard();
        let v = net.vars.variables();
        v["hidden.0.weight"]
            .shallow_clone()
            .copy_(&Tensor::eye(FEATURES as i64, (Kind::Float, Device::Cpu)));
        let _ = v["hidden.0.bias"].shallow_clone().zero_();
    }
    let mut method = lora("rank = 2").unwrap();
    let outcome = run(
        &experiment_with(ALL_READOUTS_TOML),
        &stream,
        &net,
        &mut method,
        &mut Silent,
    )
    .unwrap();
    let inference = outcome.counts[&Readout::TaskInference].accuracy().unwrap();
    let inferred = &outcome.counts[&Readout::TaskInferred];
    let task_il = &outcome.counts[&Readout::TaskIl];
    for trained in 1..=3 {
        for task in 0..3 {
            // Inference picks among the trained tasks: exact on those, never right on others.
            let expected = if task < trained { 1.0 } else { 0.0 };
            assert_eq!(
                inference.r(trained, task + 1),
                expected,
                "{trained}, {task}"
            );
            if task < trained {
                assert_eq!(
                    inferred.cell(trained, task),
                    task_il.cell(trained, task),
                    "{trained}, {task}"
                );
            }
        }
    }
    // Task-IL learned something to compare with.
    assert!(task_il.cell(3, 0).0 > 0);
}

#[test]
fn state_keeps_the_classes_and_prototypes_for_inference() {
    let stream = separated_stream();
    let net = network(12);
    let mut method = lora("rank = 2").unwrap();
    run(&experiment(), &stream, &net, &mut method, &mut Silent).unwrap();
    let names: Vec<String> = method.state().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"classes.task2".to_owned()), "{names:?}");
    assert!(names.contains(&"prototypes.task2".to_owned()), "{names:?}");
    let xs = inputs();
    let expected = method.infer_task(&net, &xs).unwrap();

    let mut restored = lora("rank = 2").unwrap();
    restored.load_state(method.state()).unwrap();
    let fresh = network(13);
    restored
        .before_task(&task_context(&fresh, &stream, 0))
        .unwrap();
    assert!(restored.infer_task(&fresh, &xs).is_some());
    // The prototypes came back: the same network gives the same ids.
    let mut same = lora("rank = 2").unwrap();
    same.load_state(method.state()).unwrap();
    // The trained network's values, copied (a re-seeded build could see other draws: tests
    // running in parallel share torch's generator).
    let mut copy = network(12);
    copy.vars.copy(&net.vars).unwrap();
    same.before_task(&task_context(&copy, &stream, 0)).unwrap();
    assert!(same.infer_task(&copy, &xs).unwrap().equal(&expected));

    let without: Vec<(String, Tensor)> = method
        .state()
        .into_iter()
        .filter(|(n, _)| n != "prototypes.task1")
        .collect();
    let error = lora("")
        .unwrap()
        .load_state(without)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `lora` failed: state lacks `classes.task1` or `prototypes.task1`"
    );
}

/// Without `target`, a transformer gets adapters on every linear layer of its blocks, an MLP
/// on its hidden layers.
#[test]
fn the_default_target_follows_the_model() {
    let stream = stream();
    let vit = seeded_network(8, |path| {
        let shape = retain_models::VitShape {
            image: [1, 1, FEATURES],
            patch: 1,
            dim: 4,
            depth: 2,
            heads: 2,
            mlp_dim: 8,
        };
        Box::new(retain_models::VisionTransformer::new(path, shape, 6))
    });
    let mut method = lora("rank = 2").unwrap();
    method.before_task(&task_context(&vit, &stream, 0)).unwrap();
    let adapted: Vec<String> = vit
        .parameters()
        .into_iter()
        .map(|(n, _)| n)
        .filter_map(|n| n.strip_suffix(".a").map(str::to_owned))
        .collect();
    let expected: Vec<String> = (0..2)
        .flat_map(|b| {
            ["attn.proj", "attn.qkv", "mlp.fc1", "mlp.fc2"].map(|l| format!("lora.blocks.{b}.{l}"))
        })
        .collect();
    assert_eq!(adapted, expected);

    let mlp = network(9);
    let mut method = lora("rank = 2").unwrap();
    method.before_task(&task_context(&mlp, &stream, 0)).unwrap();
    let adapted: Vec<String> = mlp
        .parameters()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.ends_with(".a"))
        .collect();
    assert_eq!(adapted, ["lora.hidden.0.a", "lora.hidden.1.a"]);
}

#[test]
fn the_schema_fills_in_the_documented_defaults() {
    let params: LoraParams = DESCRIPTOR.parse(&toml::Table::new()).unwrap();
    assert_eq!(
        params,
        LoraParams {
            rank: 8,
            alpha: None,
            target: None,
        }
    );
    assert_eq!(lora("").unwrap().scale(), 1.0);
    let error = lora("rank = -1").err().unwrap().to_string();
    assert!(error.contains("`rank` must be integer ≥ 0"), "{error}");
}

#[test]
fn a_rank_beyond_the_host_memory_is_refused_naming_the_key() {
    let params: toml::Table = toml::from_str("rank = 1000000000000").unwrap();
    let err = from_params(&params).err().unwrap().to_string();
    assert!(
        err.contains("`method.rank` = 1000000000000 needs at least"),
        "{err}"
    );
    assert!(err.contains("more than this host's"), "{err}");
}
