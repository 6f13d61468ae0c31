use super::*;
use retain_config::{DatasetName, Experiment, Readout, StreamConfig};
use retain_stream::TaskStream;
use retain_train::testkit::{synthetic_dataset, task_context};
use retain_train::{Silent, run};
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
fn network(seed: i64) -> Network {
    tch::manual_seed(seed);
    Network::from_builder(Device::Cpu, |path| {
        Box::new(retain_models::Mlp::new(path, FEATURES, &[8, 7], 6))
    })
}

fn lora(toml: &str) -> Result<Lora, TrainError> {
    let table: toml::Table = toml::from_str(toml).unwrap();
    Lora::new(parse_params("lora", &table)?)
}

fn inputs() -> Tensor {
    tch::manual_seed(99);
    Tensor::randn([5, 1, 1, FEATURES as i64], (Kind::Float, Device::Cpu))
}

fn snapshot(net: &Network) -> BTreeMap<String, Tensor> {
    net.vars
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect()
}

fn experiment() -> Experiment {
    Experiment::from_source(
        r#"
name = "lora-test"
device = "cpu"
[stream]
kind = "split"
dataset = "mnist"
tasks = 3
classes_per_task = 2
readouts = ["class_il", "task_il"]
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
"#,
        "lora-test.toml",
        &[],
    )
    .unwrap()
}

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
    let stream = stream();
    let net = network(3);
    let mut method = lora("rank = 3\nalpha = 6.0").unwrap();
    run(&experiment(), &stream, &net, &mut method, &mut Silent).unwrap();
    let xs = inputs();
    let unmerged = net.model.forward_t(&xs, false);
    let v = net.vars.variables();
    let merged = |layer: &str| {
        &v[&format!("{layer}.weight")]
            + v[&format!("lora.{layer}.b")].matmul(&v[&format!("lora.{layer}.a")]) * 2.0
    };
    let by_hand = xs
        .flatten(1, -1)
        .linear(&merged("hidden.0"), Some(&v["hidden.0.bias"]))
        .relu()
        .linear(&merged("hidden.1"), Some(&v["hidden.1.bias"]))
        .relu()
        .linear(&v["head.weight"], Some(&v["head.bias"]));
    let worst = (&unmerged - &by_hand).abs().max().double_value(&[]);
    assert!(worst < 1e-5, "largest difference {worst}");
    // The adapters do change the outputs.
    let plain = xs
        .flatten(1, -1)
        .linear(&v["hidden.0.weight"], Some(&v["hidden.0.bias"]))
        .relu()
        .linear(&v["hidden.1.weight"], Some(&v["hidden.1.bias"]))
        .relu()
        .linear(&v["head.weight"], Some(&v["head.bias"]));
    assert!((&unmerged - &plain).abs().max().double_value(&[]) > 1e-3);
}

#[test]
fn selecting_a_task_swaps_in_its_weights_and_latest_restores() {
    let stream = stream();
    let net = network(4);
    let mut method = lora("rank = 2").unwrap();
    run(&experiment(), &stream, &net, &mut method, &mut Silent).unwrap();
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
    let stream = stream();
    let net = network(5);
    let mut method = lora("rank = 2").unwrap();
    run(&experiment(), &stream, &net, &mut method, &mut Silent).unwrap();
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
    assert!(message(lora("rnak = 4")).contains("unknown field `rnak`"));
    let stream = stream();
    let net = network(7);
    let error = lora("target = [\"conv*\"]")
        .unwrap()
        .before_task(&task_context(&net, &stream, 0))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `lora` failed: `target` pattern `conv*` matches no adaptable layer (the model has: head, hidden.0, hidden.1)"
    );
    let error = lora("target = [\"*\"]")
        .unwrap()
        .before_task(&task_context(&net, &stream, 0))
        .unwrap_err()
        .to_string();
    assert!(error.contains("selects the head `head`"), "{error}");
}

#[test]
fn patterns_match_with_stars() {
    assert!(matches("hidden.*", "hidden.0"));
    assert!(matches("hidden.1", "hidden.1"));
    assert!(!matches("hidden.1", "hidden.10"));
    assert!(matches("*.0", "hidden.0"));
    assert!(matches("layer*.conv*", "layer2.conv1"));
    assert!(!matches("hidden.*", "head"));
    assert!(matches("*", ""));
}
