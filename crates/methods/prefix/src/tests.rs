use super::*;
use retain_peft::conformance::assert_selection_and_state_round_trip;
use retain_train::testkit::{
    MethodFixture, mnist, mnist_shaped_inputs, small_vit_split_mnist, stream_and_network,
    task_context,
};
use tch::Kind;

fn prefix(toml: &str) -> Result<Prefix, TrainError> {
    let table: toml::Table = toml::from_str(toml).unwrap();
    Prefix::new(DESCRIPTOR.parse(&table)?)
}

#[test]
fn a_fresh_prefix_changes_the_outputs_and_only_the_prefixes_and_the_head_train() {
    let experiment = small_vit_split_mnist(2, 20, 1, "name = \"prefix\"");
    let (stream, net) = stream_and_network(&experiment, &mnist());
    let xs = mnist_shaped_inputs();
    let before = net.model.forward_t(&xs, false);
    let mut method = prefix("length = 3").unwrap();
    method.before_task(&task_context(&net, &stream, 0)).unwrap();
    assert_eq!(method.blocks(), [0, 1]);
    // Three more keys in every attention: not neutral, unlike a fresh adapter.
    let prefixed = net.model.forward_t(&xs, false);
    assert!((&prefixed - &before).abs().max().double_value(&[]) > 1e-6);
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
            ("prefix.0.key".to_owned(), vec![3, 16]),
            ("prefix.0.value".to_owned(), vec![3, 16]),
            ("prefix.1.key".to_owned(), vec![3, 16]),
            ("prefix.1.value".to_owned(), vec![3, 16]),
        ]
    );
    for (name, variable) in net.vars.variables() {
        let trains = name.starts_with("prefix.") || name.starts_with("head.");
        assert_eq!(variable.requires_grad(), trains, "{name}");
    }
    // Drawn from N(0, 0.02²): within 6 standard deviations, not all zero.
    let vars = net.vars.variables();
    for name in ["prefix.0.key", "prefix.1.value"] {
        assert!(vars[name].abs().max().double_value(&[]) < 6.0 * INIT_STD);
        assert!(vars[name].abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
    // The outputs follow the live values of the last block's prefix.
    {
        let _no_grad = tch::no_grad_guard();
        let _ = vars["prefix.1.value"].shallow_clone().zero_();
    }
    assert!(!net.model.forward_t(&xs, false).equal(&prefixed));
}

#[test]
fn blocks_restrict_the_prefixes() {
    let experiment = small_vit_split_mnist(2, 20, 1, "name = \"prefix\"");
    let (stream, net) = stream_and_network(&experiment, &mnist());
    let mut method = prefix("blocks = [1]\nlength = 2").unwrap();
    method.before_task(&task_context(&net, &stream, 0)).unwrap();
    assert_eq!(method.blocks(), [1]);
    assert_eq!(
        method.bank().method_variables(),
        ["prefix.1.key", "prefix.1.value"]
    );
}

#[test]
fn selecting_a_task_swaps_in_its_weights_and_state_round_trips() {
    let experiment = small_vit_split_mnist(2, 100, 1, "name = \"prefix\"");
    assert_selection_and_state_round_trip(&experiment, || prefix("length = 3").unwrap());
}

#[test]
fn bad_hyper_parameters_blocks_and_models_are_refused() {
    let message = |r: Result<Prefix, TrainError>| r.err().unwrap().to_string();
    assert_eq!(
        message(prefix("length = 0")),
        "invalid hyper-parameters for method `prefix`: `length` must be at least 1"
    );
    assert!(message(prefix("blocks = []")).contains("`blocks` must name at least one block"));
    assert!(message(prefix("blocks = [1, 0, 1]")).contains("`blocks` names block 1 twice"));
    assert!(message(prefix("lenght = 4")).contains("unknown key `lenght`"));
    let experiment = small_vit_split_mnist(2, 20, 1, "name = \"prefix\"");
    let (stream, net) = stream_and_network(&experiment, &mnist());
    let error = prefix("blocks = [0, 2]")
        .unwrap()
        .before_task(&task_context(&net, &stream, 0))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `prefix` failed: `method.blocks` names block 2, but the model has 2 (0 to 1)"
    );
    let fixture = MethodFixture::new();
    let error = prefix("")
        .unwrap()
        .before_task(&fixture.task(0))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `prefix` failed: prefix tuning needs a transformer, whose attention takes the prefix: set `model.kind = \"vit\"`"
    );
    // Nothing was frozen or created by the refused binds.
    assert_eq!(fixture.network.parameters().len(), 4);
    assert!(
        net.vars
            .variables()
            .keys()
            .all(|n| !n.starts_with("prefix."))
    );
}

#[test]
fn the_schema_fills_in_the_documented_defaults() {
    let params: PrefixParams = DESCRIPTOR.parse(&toml::Table::new()).unwrap();
    assert_eq!(
        params,
        PrefixParams {
            length: 5,
            blocks: None,
        }
    );
    let error = prefix("blocks = [-1]").err().unwrap().to_string();
    assert!(error.contains("`blocks` must be [integer ≥ 0]"), "{error}");
}
