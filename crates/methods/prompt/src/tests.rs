use super::*;
use retain_config::{Experiment, Readout};
use retain_metrics::AccuracyMatrix;
use retain_train::testkit::{
    MethodFixture, mnist, snapshot, split_mnist_vit, stream_and_network, task_context,
};
use retain_train::{Silent, run};
use tch::{Device, Kind};

fn prompt(toml: &str) -> Result<Prompt, TrainError> {
    let table: toml::Table = toml::from_str(toml).unwrap();
    Prompt::new(parse_params(NAME, &table)?)
}

/// Images of MNIST's shape.
fn inputs() -> Tensor {
    tch::manual_seed(99);
    Tensor::randn([5, 1, 28, 28], (Kind::Float, Device::Cpu))
}

/// Split-MNIST on the testkit's small vision transformer, Adam at learning rate 0.01.
fn vit_experiment(tasks: usize, train: usize, epochs: usize, method_toml: &str) -> Experiment {
    let epochs = format!("training.epochs={epochs}");
    split_mnist_vit(
        tasks,
        train,
        200,
        0,
        method_toml,
        &["training.optimizer.lr=0.01", &epochs],
    )
}

/// Trains `method` on `experiment`; returns the task-IL accuracy matrix, the variables before
/// and after, and the network.
fn train(
    experiment: &Experiment,
    method: &mut dyn Method,
) -> (
    AccuracyMatrix,
    std::collections::BTreeMap<String, Tensor>,
    Network,
) {
    let (stream, net) = stream_and_network(experiment, &mnist());
    let before = snapshot(&net);
    let outcome = run(experiment, &stream, &net, method, &mut Silent).unwrap();
    let task_il = outcome.counts[&Readout::TaskIl].accuracy().unwrap();
    (task_il, before, net)
}

#[test]
fn a_fresh_prompt_changes_the_outputs_and_only_the_prompt_and_the_head_train() {
    let experiment = vit_experiment(2, 20, 1, "name = \"prompt\"");
    let (stream, net) = stream_and_network(&experiment, &mnist());
    let xs = inputs();
    let before = net.model.forward_t(&xs, false);
    let mut method = prompt("length = 3").unwrap();
    method.before_task(&task_context(&net, &stream, 0)).unwrap();
    // Three more tokens in every attention: not neutral, unlike a fresh adapter.
    let prompted = net.model.forward_t(&xs, false);
    assert!((&prompted - &before).abs().max().double_value(&[]) > 1e-6);
    let trained: Vec<(String, Vec<i64>)> = net
        .parameters()
        .into_iter()
        .map(|(n, t)| (n, t.size()))
        .collect();
    assert_eq!(
        trained,
        [
            ("head.bias".to_owned(), vec![10]),
            ("head.weight".to_owned(), vec![10, 16]),
            ("prompt.tokens".to_owned(), vec![3, 16]),
        ]
    );
    for (name, variable) in net.vars.variables() {
        let trains = name == "prompt.tokens" || name.starts_with("head.");
        assert_eq!(variable.requires_grad(), trains, "{name}");
    }
    // Drawn from N(0, 0.02²): within 6 standard deviations, not all zero.
    let tokens = &net.vars.variables()["prompt.tokens"];
    assert!(tokens.abs().max().double_value(&[]) < 6.0 * INIT_STD);
    assert!(tokens.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    // The outputs follow the live tokens.
    {
        let _no_grad = tch::no_grad_guard();
        let _ = tokens.shallow_clone().zero_();
    }
    let zeroed = net.model.forward_t(&xs, false);
    assert!(!zeroed.equal(&prompted));
}

#[test]
fn selecting_a_task_swaps_in_its_weights_and_state_round_trips() {
    let experiment = vit_experiment(2, 100, 1, "name = \"prompt\"");
    let mut method = prompt("length = 3").unwrap();
    let (_, _, net) = train(&experiment, &mut method);
    let xs = inputs();
    let latest = net.model.forward_t(&xs, false);
    let live = snapshot(&net);
    method.select(&net, Selection::Task(0)).unwrap();
    let first = net.model.forward_t(&xs, false);
    assert!(!first.equal(&latest));
    method.select(&net, Selection::Task(1)).unwrap();
    assert!(net.model.forward_t(&xs, false).equal(&latest));
    method.select(&net, Selection::Latest).unwrap();
    let restored = snapshot(&net);
    for (name, value) in &live {
        assert!(restored[name].equal(value), "{name} restored");
    }

    // The same weights in a fresh network, with the state loaded into a fresh method.
    let path = std::env::temp_dir().join(format!("prompt-{}.safetensors", std::process::id()));
    net.save(&path).unwrap();
    let (stream, fresh) = stream_and_network(&experiment, &mnist());
    let mut loaded = prompt("length = 3").unwrap();
    loaded.load_state(method.state()).unwrap();
    loaded
        .before_task(&task_context(&fresh, &stream, 0))
        .unwrap();
    fresh.load(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    loaded.select(&fresh, Selection::Task(0)).unwrap();
    assert!(fresh.model.forward_t(&xs, false).equal(&first));
    loaded.select(&fresh, Selection::Latest).unwrap();
    assert!(fresh.model.forward_t(&xs, false).equal(&latest));
}

#[test]
fn bad_hyper_parameters_and_models_are_refused() {
    let message = |r: Result<Prompt, TrainError>| r.err().unwrap().to_string();
    assert_eq!(
        message(prompt("length = 0")),
        "invalid hyper-parameters for method `prompt`: `length` must be at least 1"
    );
    assert!(message(prompt("lenght = 4")).contains("unknown field `lenght`"));
    let fixture = MethodFixture::new();
    let error = prompt("")
        .unwrap()
        .before_task(&fixture.task(0))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `prompt` failed: prompt tuning needs a transformer, whose input sequence takes the prompt: set `[model] kind = \"vit\"`"
    );
    // Nothing was frozen or created.
    assert_eq!(fixture.network.parameters().len(), 4);
}
