use super::*;
use retain_peft::conformance::assert_selection_and_state_round_trip;
use retain_train::testkit::{
    MethodFixture, mnist, mnist_shaped_inputs, seeded_normal, small_vit_split_mnist,
    stream_and_network, task_context,
};
use tch::Kind;

fn adapter(toml: &str) -> Result<Adapter, TrainError> {
    let table: toml::Table = toml::from_str(toml).unwrap();
    Adapter::new(DESCRIPTOR.parse(&table)?)
}

#[test]
fn a_fresh_adapter_is_the_identity_and_only_adapters_and_the_head_train() {
    let experiment = small_vit_split_mnist(2, 20, 1, "name = \"adapter\"");
    let (stream, net) = stream_and_network(&experiment, &mnist());
    let xs = mnist_shaped_inputs();
    let before = net.model.forward_t(&xs, false);
    let mut method = adapter("width = 4").unwrap();
    method.before_task(&task_context(&net, &stream, 0)).unwrap();
    assert!(net.model.forward_t(&xs, false).equal(&before));
    assert_eq!(
        method.layers(),
        [
            "blocks.0.attn.proj",
            "blocks.0.mlp.fc2",
            "blocks.1.attn.proj",
            "blocks.1.mlp.fc2"
        ]
    );
    let trained: Vec<(String, Vec<i64>)> = net
        .parameters()
        .into_iter()
        .map(|(n, t)| (n, t.size()))
        .collect();
    assert_eq!(trained.len(), 2 + 4 * 4);
    assert_eq!(
        trained[..6],
        [
            ("adapter.blocks.0.attn.proj.down_bias".to_owned(), vec![4]),
            (
                "adapter.blocks.0.attn.proj.down_weight".to_owned(),
                vec![4, 16]
            ),
            ("adapter.blocks.0.attn.proj.up_bias".to_owned(), vec![16]),
            (
                "adapter.blocks.0.attn.proj.up_weight".to_owned(),
                vec![16, 4]
            ),
            ("adapter.blocks.0.mlp.fc2.down_bias".to_owned(), vec![4]),
            (
                "adapter.blocks.0.mlp.fc2.down_weight".to_owned(),
                vec![4, 16]
            ),
        ]
    );
    assert_eq!(trained[16].0, "head.bias");
    assert_eq!(trained[17], ("head.weight".to_owned(), vec![10, 16]));
    for (name, variable) in net.vars.variables() {
        let trains = name.starts_with("adapter.") || name.starts_with("head.");
        assert_eq!(variable.requires_grad(), trains, "{name}");
    }
    // D and d uniform within ±1/√16 and not zero; U and u zero.
    let vars = net.vars.variables();
    for leaf in ["down_weight", "down_bias"] {
        let t = &vars[&format!("adapter.blocks.1.mlp.fc2.{leaf}")];
        assert!(t.abs().max().double_value(&[]) <= 0.25, "{leaf}");
        assert!(t.abs().sum(Kind::Float).double_value(&[]) > 0.0, "{leaf}");
    }
    for leaf in ["up_weight", "up_bias"] {
        let t = &vars[&format!("adapter.blocks.1.mlp.fc2.{leaf}")];
        assert_eq!(t.abs().sum(Kind::Float).double_value(&[]), 0.0, "{leaf}");
    }
}

#[test]
fn an_mlp_gets_adapters_on_its_hidden_layers() {
    let fixture = MethodFixture::new();
    let xs = seeded_normal(&[3, 1, 2, 2], 5);
    let before = fixture.network.model.forward_t(&xs, false);
    let mut method = adapter("width = 3").unwrap();
    method.before_task(&fixture.task(0)).unwrap();
    assert_eq!(method.layers(), ["hidden.0"]);
    assert!(fixture.network.model.forward_t(&xs, false).equal(&before));
    assert_eq!(
        method.bank().method_variables(),
        [
            "adapter.hidden.0.down_bias",
            "adapter.hidden.0.down_weight",
            "adapter.hidden.0.up_bias",
            "adapter.hidden.0.up_weight"
        ]
    );
}

#[test]
fn selecting_a_task_swaps_in_its_weights_and_state_round_trips() {
    let experiment = small_vit_split_mnist(2, 100, 1, "name = \"adapter\"");
    assert_selection_and_state_round_trip(&experiment, || adapter("width = 4").unwrap());
}

#[test]
fn bad_hyper_parameters_and_targets_are_refused() {
    let message = |r: Result<Adapter, TrainError>| r.err().unwrap().to_string();
    assert_eq!(
        message(adapter("width = 0")),
        "invalid hyper-parameters for method `adapter`: `width` must be at least 1"
    );
    assert!(message(adapter("target = []")).contains("at least one layer pattern"));
    assert!(message(adapter("widht = 4")).contains("unknown key `widht`"));
    let fixture = MethodFixture::new();
    let error = adapter("target = [\"blocks.*.mlp.fc2\"]")
        .unwrap()
        .before_task(&fixture.task(0))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `adapter` failed: `method.target` pattern `blocks.*.mlp.fc2` matches no adaptable layer (the model has: head, hidden.0)"
    );
    let error = adapter("target = [\"head\"]")
        .unwrap()
        .before_task(&fixture.task(0))
        .unwrap_err()
        .to_string();
    assert!(error.contains("selects the head `head`"), "{error}");
    // Nothing was frozen or created by the refused binds.
    assert_eq!(fixture.network.parameters().len(), 4);
}

#[test]
fn the_schema_fills_in_the_documented_defaults() {
    let params: AdapterParams = DESCRIPTOR.parse(&toml::Table::new()).unwrap();
    assert_eq!(
        params,
        AdapterParams {
            width: 16,
            target: None,
        }
    );
}

#[test]
fn a_width_beyond_the_host_memory_is_refused_naming_the_key() {
    let params: toml::Table = toml::from_str("width = 1000000000000").unwrap();
    let err = from_params(&params).err().unwrap().to_string();
    assert!(
        err.contains("`method.width` = 1000000000000 needs at least"),
        "{err}"
    );
    assert!(err.contains("more than this host's"), "{err}");
}
