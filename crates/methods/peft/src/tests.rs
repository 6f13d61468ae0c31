use super::*;
use retain_stream::TaskStream;
use retain_train::testkit::{
    MethodFixture, mnist, seeded_network, single_threaded, split_mnist, task_context,
};
use retain_train::{Network, Silent, run};
use std::collections::BTreeMap;
use tch::{Device, Tensor};

fn peft(toml: &str) -> Result<Peft, TrainError> {
    Peft::new(DESCRIPTOR.parse(&toml::from_str(toml).unwrap())?)
}

fn snapshot(net: &Network) -> BTreeMap<String, Tensor> {
    net.vars
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect()
}

/// Trains `method_toml` on two reduced Split-MNIST tasks (MLP 784-100-100-10, Adam with
/// weight decay, so that a frozen variable would move if the optimiser touched it); returns
/// the variables before and after and the network.
fn train_on_mnist(
    method_toml: &str,
) -> (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>, Network) {
    single_threaded();
    let experiment = split_mnist(
        2,
        200,
        100,
        0,
        method_toml,
        &["training.optimizer.weight_decay=0.01"],
    );
    let stream =
        TaskStream::build(&mnist(), &experiment.stream, experiment.seed, Device::Cpu).unwrap();
    let net = Network::new(&experiment, &stream);
    let before = snapshot(&net);
    let mut method = from_params(&experiment.method.params).unwrap();
    run(&experiment, &stream, &net, method.as_mut(), &mut Silent).unwrap();
    let after = snapshot(&net);
    (before, after, net)
}

#[test]
fn only_the_selection_trains_on_real_data() {
    let (before, after, net) = train_on_mnist(
        "name = \"peft\"\ntrainable = [\"hidden.1.*\", \"head.*\"]\nfrozen = [\"head.bias\"]",
    );
    for name in ["hidden.0.weight", "hidden.0.bias", "head.bias"] {
        assert!(after[name].equal(&before[name]), "{name} is bit-identical");
    }
    for name in ["hidden.1.weight", "hidden.1.bias", "head.weight"] {
        assert!(!after[name].equal(&before[name]), "{name} trained");
    }
    let trained: Vec<String> = net.parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(trained, ["head.weight", "hidden.1.bias", "hidden.1.weight"]);
    // hidden.1: 100·100 + 100; head.weight: 10·100. (The run's manifest counts the same way.)
    let count: i64 = net.parameters().iter().map(|(_, t)| t.numel() as i64).sum();
    assert_eq!(count, 100 * 100 + 100 + 10 * 100);
}

#[test]
fn the_trainable_count_is_the_sum_over_the_selection() {
    let fixture = MethodFixture::new();
    // 4-6-10 MLP: hidden.0 is 6·4 + 6, head 10·6 + 10.
    for (toml, expected) in [
        ("trainable = [\"*\"]", 6 * 4 + 6 + 10 * 6 + 10),
        ("trainable = [\"head.*\"]", 10 * 6 + 10),
        ("trainable = [\"*.bias\"]", 6 + 10),
        ("trainable = [\"*\"]\nfrozen = [\"*.weight\"]", 6 + 10),
        (
            "trainable = [\"hidden.0.weight\", \"head.bias\"]",
            6 * 4 + 10,
        ),
    ] {
        let network = seeded_network(0, |path| {
            Box::new(retain_models::Mlp::new(path, 4, &[6], 10))
        });
        let mut method = peft(toml).unwrap();
        method
            .before_task(&task_context(&network, &fixture.stream, 0))
            .unwrap();
        let count: i64 = network
            .parameters()
            .iter()
            .map(|(_, t)| t.numel() as i64)
            .sum();
        assert_eq!(count, expected, "{toml}");
        let names: Vec<String> = network.parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, method.selected(), "{toml}");
    }
}

#[test]
fn the_selection_is_made_once() {
    let fixture = MethodFixture::new();
    let mut method = peft("trainable = [\"head.*\"]").unwrap();
    method.before_task(&fixture.task(0)).unwrap();
    // Something else turning a variable back on is not undone at the next task.
    let _ = fixture.network.vars.variables()["hidden.0.bias"].set_requires_grad(true);
    method.before_task(&fixture.task(1)).unwrap();
    assert_eq!(fixture.network.parameters().len(), 3);
}

fn bind_error(toml: &str, network: &Network) -> String {
    let fixture = MethodFixture::new();
    peft(toml)
        .unwrap()
        .before_task(&task_context(network, &fixture.stream, 0))
        .unwrap_err()
        .to_string()
}

#[test]
fn patterns_that_match_nothing_are_errors_listing_the_names() {
    let fixture = MethodFixture::new();
    let net = &fixture.network;
    assert_eq!(
        bind_error("trainable = [\"head.*\", \"hidden.1.*\"]", net),
        "method `peft` failed: `method.trainable` pattern `hidden.1.*` matches no trainable variable (the model has: head.bias, head.weight, hidden.0.bias, hidden.0.weight)"
    );
    assert_eq!(
        bind_error("trainable = [\"head.*\"]\nfrozen = [\"head\"]", net),
        "method `peft` failed: `method.frozen` pattern `head` matches no trainable variable (the model has: head.bias, head.weight, hidden.0.bias, hidden.0.weight)"
    );
    assert_eq!(
        bind_error("trainable = [\"head.*\"]\nfrozen = [\"head.*\"]", net),
        "method `peft` failed: `frozen` excludes every variable `trainable` selects, so nothing would train (the model has: head.bias, head.weight, hidden.0.bias, hidden.0.weight)"
    );
    // Running statistics are buffers, not trainable variables.
    let resnet = seeded_network(0, |path| {
        Box::new(retain_models::ResNet::resnet18(path, 1, 2, 10))
    });
    let error = bind_error("trainable = [\"*.running_mean\"]", &resnet);
    assert!(
        error.starts_with("method `peft` failed: `method.trainable` pattern `*.running_mean` matches no trainable variable (the model has: bn1.bias, bn1.weight, conv1.weight, layer1.0.bn1.bias, "),
        "{error}"
    );
    assert!(error.ends_with(", … (38 more))"), "{error}");
    // Nothing was frozen by a failed selection.
    assert_eq!(fixture.network.parameters().len(), 4);
}

#[test]
fn bad_hyper_parameters_are_rejected() {
    assert_eq!(
        peft("trainable = []").unwrap_err().to_string(),
        "invalid hyper-parameters for method `peft`: `trainable` must list at least one name pattern"
    );
    let error = peft("frozen = [\"head.*\"]").unwrap_err().to_string();
    assert!(error.contains("missing key `trainable`"), "{error}");
    let error = peft("trainable = [\"head.*\"]\nfreeze = []")
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown key `freeze`"), "{error}");
    let error = from_params(&toml::from_str("trainable = \"head.*\"").unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("`trainable` must be [string] (found string `\"head.*\"`)"),
        "{error}"
    );
}

#[test]
fn the_schema_fills_in_the_documented_defaults() {
    let params: PeftParams = DESCRIPTOR
        .parse(&toml::from_str("trainable = [\"head.*\"]").unwrap())
        .unwrap();
    assert_eq!(
        params,
        PeftParams {
            trainable: vec!["head.*".into()],
            frozen: Vec::new(),
        }
    );
}
