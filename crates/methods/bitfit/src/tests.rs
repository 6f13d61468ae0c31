use super::*;
use retain_config::{DatasetName, Experiment, Readout, StreamConfig};
use retain_stream::TaskStream;
use retain_train::testkit::{seeded_network, synthetic_dataset};
use retain_train::{Network, Silent, run};
use std::collections::BTreeMap;
use tch::{Device, Tensor};

fn stream() -> TaskStream {
    let config = StreamConfig::split(DatasetName::Mnist, 2, 2, vec![Readout::ClassIl]);
    TaskStream::build(&synthetic_dataset(4, 6, 5), &config, 0, Device::Cpu).unwrap()
}

fn experiment(method: &str) -> Experiment {
    Experiment::from_source(
        &format!(
            r#"
name = "bitfit-test"
device = "cpu"
[stream]
kind = "split"
dataset = "mnist"
tasks = 2
classes_per_task = 2
[model]
kind = "mlp"
hidden = [6, 5]
[training]
epochs = 2
batch_size = 4
[training.optimizer]
kind = "sgd"
lr = 0.1
momentum = 0.9
weight_decay = 0.01
[method]
{method}
"#
        ),
        "bitfit-test.toml",
        &[],
    )
    .unwrap()
}

fn snapshot(net: &Network) -> BTreeMap<String, Tensor> {
    net.vars
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect()
}

fn train(
    method_toml: &str,
) -> (
    BTreeMap<String, Tensor>,
    BTreeMap<String, Tensor>,
    Vec<String>,
) {
    let stream = stream();
    let net = seeded_network(0, |path| {
        Box::new(retain_models::Mlp::new(path, 5, &[6, 5], 4))
    });
    let before = snapshot(&net);
    let experiment = experiment(method_toml);
    let mut method = from_params(&experiment.method.params).unwrap();
    run(&experiment, &stream, &net, method.as_mut(), &mut Silent).unwrap();
    let trained = net.parameters().into_iter().map(|(n, _)| n).collect();
    (before, snapshot(&net), trained)
}

#[test]
fn only_biases_and_the_head_change() {
    // SGD with momentum and weight decay: a frozen weight would move under either if the
    // optimiser touched it.
    let (before, after, trained) = train("name = \"bitfit\"");
    assert_eq!(
        trained,
        ["head.bias", "head.weight", "hidden.0.bias", "hidden.1.bias"]
    );
    for name in ["hidden.0.weight", "hidden.1.weight"] {
        assert!(after[name].equal(&before[name]), "{name} is bit-identical");
    }
    for name in ["hidden.0.bias", "hidden.1.bias", "head.bias", "head.weight"] {
        assert!(!after[name].equal(&before[name]), "{name} trained");
    }
}

#[test]
fn without_the_head_only_biases_change() {
    let (before, after, trained) = train("name = \"bitfit\"\nhead = false");
    assert_eq!(trained, ["head.bias", "hidden.0.bias", "hidden.1.bias"]);
    for name in ["hidden.0.weight", "hidden.1.weight", "head.weight"] {
        assert!(after[name].equal(&before[name]), "{name} is bit-identical");
    }
    for name in ["hidden.0.bias", "hidden.1.bias", "head.bias"] {
        assert!(!after[name].equal(&before[name]), "{name} trained");
    }
}

#[test]
fn names_decide_what_trains_and_unknown_keys_are_refused() {
    let bitfit = BitFit::new(BitFitParams { head: true });
    assert!(bitfit.trains("layer1.0.bn1.bias", "linear"));
    assert!(bitfit.trains("linear.weight", "linear"));
    assert!(!bitfit.trains("linear_extra.weight", "linear"));
    assert!(!bitfit.trains("layer1.0.conv1.weight", "linear"));
    assert!(!bitfit.trains("bn1.running_mean", "linear"));
    let table: toml::Table = toml::from_str("heads = false").unwrap();
    let error = from_params(&table).err().unwrap().to_string();
    assert!(error.contains("unknown key `heads`"), "{error}");
}

#[test]
fn the_schema_fills_in_the_documented_defaults() {
    let params: BitFitParams = DESCRIPTOR.parse(&toml::Table::new()).unwrap();
    assert_eq!(params, BitFitParams { head: true });
    let table: toml::Table = toml::from_str("head = 1").unwrap();
    let error = from_params(&table).err().unwrap().to_string();
    assert!(error.contains("`head` must be bool"), "{error}");
}
