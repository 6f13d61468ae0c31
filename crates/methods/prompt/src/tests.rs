use super::*;
use retain_peft::conformance::assert_selection_and_state_round_trip;
use retain_train::testkit::{
    MethodFixture, mnist, mnist_shaped_inputs, small_vit_split_mnist, stream_and_network,
    task_context,
};
use tch::Kind;

fn prompt(toml: &str) -> Result<Prompt, TrainError> {
    let table: toml::Table = toml::from_str(toml).unwrap();
    Prompt::new(DESCRIPTOR.parse(&table)?)
}

#[test]
fn a_fresh_prompt_changes_the_outputs_and_only_the_prompt_and_the_head_train() {
    let experiment = small_vit_split_mnist(2, 20, 1, "name = \"prompt\"");
    let (stream, net) = stream_and_network(&experiment, &mnist());
    let xs = mnist_shaped_inputs();
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
    let experiment = small_vit_split_mnist(2, 100, 1, "name = \"prompt\"");
    assert_selection_and_state_round_trip(&experiment, || prompt("length = 3").unwrap());
}

#[test]
fn bad_hyper_parameters_and_models_are_refused() {
    let message = |r: Result<Prompt, TrainError>| r.err().unwrap().to_string();
    assert_eq!(
        message(prompt("length = 0")),
        "invalid hyper-parameters for method `prompt`: `length` must be at least 1"
    );
    assert!(message(prompt("lenght = 4")).contains("unknown key `lenght`"));
    let fixture = MethodFixture::new();
    let error = prompt("")
        .unwrap()
        .before_task(&fixture.task(0))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `prompt` failed: prompt tuning needs a transformer, whose input sequence takes the prompt: set `model.kind = \"vit\"`"
    );
    // Nothing was frozen or created.
    assert_eq!(fixture.network.parameters().len(), 4);
}

#[test]
fn the_schema_fills_in_the_documented_defaults() {
    let params: PromptParams = DESCRIPTOR.parse(&toml::Table::new()).unwrap();
    assert_eq!(params, PromptParams { length: 8 });
}
