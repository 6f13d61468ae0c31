use super::*;
use retain_train::testkit::MethodFixture;
use tch::Kind;

/// A bank on the fixture's 4-6-10 MLP with two method variables under `m.hidden.0`: `w`
/// (normal, std 1) and `z` (zeros).
fn bound(fixture: &MethodFixture) -> TaskBank {
    let net = &fixture.network;
    freeze_backbone(&net.vars, net.model.head_name());
    let mut bank = TaskBank::new("test");
    let path = nested_path(&(net.vars.root() / "m"), "hidden.0");
    let _ = bank.variable(&path, "w", &[3], Fresh::Normal { std: 1.0 });
    let _ = bank.variable(&path, "z", &[2], Fresh::Zeros);
    bank.bind(&net.vars, Device::Cpu, 0).unwrap();
    bank
}

fn live_values(bank: &TaskBank) -> Vec<Tensor> {
    bank.live().iter().map(|(_, t)| t.detach().copy()).collect()
}

/// Stands in for training: adds `by` to every live variable.
fn train(bank: &TaskBank, by: f64) {
    let _no_grad = tch::no_grad_guard();
    for (_, t) in bank.live() {
        let _ = t.shallow_clone().g_add_scalar_(by);
    }
}

fn equal(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.equal(y))
}

#[test]
fn the_live_set_is_the_head_and_the_method_variables() {
    let fixture = MethodFixture::new();
    let bank = bound(&fixture);
    let names: Vec<&str> = bank.live().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["head.bias", "head.weight", "m.hidden.0.w", "m.hidden.0.z"]
    );
    assert_eq!(bank.method_variables(), ["m.hidden.0.w", "m.hidden.0.z"]);
    let vars = fixture.network.vars.variables();
    assert!(!vars["hidden.0.weight"].requires_grad());
    assert!(!vars["hidden.0.bias"].requires_grad());
    assert!(vars["head.weight"].requires_grad());
    assert_eq!(
        vars["m.hidden.0.z"]
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );
}

#[test]
fn tasks_are_stored_fresh_variables_start_each_task_and_selection_is_exact() {
    let fixture = MethodFixture::new();
    let mut bank = bound(&fixture);
    let vars = fixture.network.vars.variables();
    train(&bank, 1.0);
    let task0 = live_values(&bank);
    bank.store();
    bank.next_task();
    // The method's variables start afresh (z zero again, w redrawn); the head goes on.
    assert_eq!(
        vars["m.hidden.0.z"]
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );
    assert!(!vars["m.hidden.0.w"].equal(&task0[2]));
    assert!(vars["head.weight"].equal(&task0[1]));
    train(&bank, 2.0);
    let task1 = live_values(&bank);
    bank.store();
    assert_eq!(bank.stored_tasks(), 2);

    bank.select(Some(0));
    assert!(equal(&live_values(&bank), &task0));
    bank.select(Some(1));
    assert!(equal(&live_values(&bank), &task1));
    bank.select(Some(0));
    // A task not trained yet, like `None`, restores the live values.
    bank.select(Some(7));
    assert!(equal(&live_values(&bank), &task1));
    bank.select(Some(0));
    bank.select(None);
    assert!(equal(&live_values(&bank), &task1));
    // The next task starts from the live head even when a stored task was selected last.
    bank.select(Some(0));
    bank.next_task();
    assert!(vars["head.weight"].equal(&task1[1]));
}

#[test]
fn state_round_trips_and_is_checked_against_the_network() {
    let fixture = MethodFixture::new();
    let mut bank = bound(&fixture);
    train(&bank, 1.0);
    bank.store();
    bank.next_task();
    train(&bank, 3.0);
    bank.store();
    let state = bank.state();
    let keys: Vec<&str> = state.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys[..4],
        [
            "task0.head.bias",
            "task0.head.weight",
            "task0.m.hidden.0.w",
            "task0.m.hidden.0.z"
        ]
    );
    assert_eq!(keys.len(), 8);

    let mut restored = TaskBank::new("test");
    restored.load_state(state).unwrap();
    assert_eq!(restored.stored_tasks(), 2);
    let other = MethodFixture::new();
    let net = &other.network;
    freeze_backbone(&net.vars, "head");
    let path = nested_path(&(net.vars.root() / "m"), "hidden.0");
    let _ = restored.variable(&path, "w", &[3], Fresh::Normal { std: 1.0 });
    let _ = restored.variable(&path, "z", &[2], Fresh::Zeros);
    restored.bind(&net.vars, Device::Cpu, 0).unwrap();
    for t in 0..2 {
        let (a, b) = (bank.stored(t).unwrap(), restored.stored(t).unwrap());
        assert!(a.iter().zip(b).all(|(x, y)| x.0 == y.0 && x.1.equal(&y.1)));
    }
    assert!(
        restored
            .load_state(Vec::new())
            .unwrap_err()
            .to_string()
            .contains("before the first task")
    );

    // A state of other variables than the network trains.
    let mut wrong = TaskBank::new("test");
    wrong.load_state(bank.state()).unwrap();
    let other = MethodFixture::new();
    freeze_backbone(&other.network.vars, "head");
    let error = wrong
        .bind(&other.network.vars, Device::Cpu, 0)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "method `test` failed: stored task 0 holds [head.bias, head.weight, m.hidden.0.w, m.hidden.0.z] but the network trains [head.bias, head.weight]"
    );

    let load = |keys: &[&str]| {
        TaskBank::new("test")
            .load_state(
                keys.iter()
                    .map(|k| (k.to_string(), Tensor::from(1.0f32)))
                    .collect(),
            )
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        load(&["head.weight"]).unwrap_err(),
        "method `test` failed: state key `head.weight` is not `task<N>.<variable>`"
    );
    assert_eq!(
        load(&["task1.a"]).unwrap_err(),
        "method `test` failed: state has no task 0 (found task 1 after it)"
    );
    assert_eq!(
        load(&["task0.a", "task1.b"]).unwrap_err(),
        "method `test` failed: task 1 stores other variables than task 0"
    );
    assert!(load(&[]).is_ok());
}

#[test]
fn layers_are_selected_by_pattern_and_the_head_is_refused() {
    let fixture = MethodFixture::new();
    let model = fixture.network.model.as_ref();
    let target = |patterns: &[&str]| {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        select_layers("test", model, &patterns)
            .map(|layers| {
                layers
                    .into_iter()
                    .map(|(n, s)| format!("{n} {s:?}"))
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.to_string())
    };
    assert_eq!(target(&["hidden.*"]).unwrap(), ["hidden.0 [6, 4]"]);
    assert_eq!(
        target(&["conv*"]).unwrap_err(),
        "method `test` failed: `method.target` pattern `conv*` matches no adaptable layer (the model has: head, hidden.0)"
    );
    assert!(
        target(&["*"])
            .unwrap_err()
            .contains("selects the head `head`")
    );
}

#[test]
fn nested_paths_follow_the_dotted_name() {
    let vs = nn::VarStore::new(Device::Cpu);
    let path = nested_path(&(vs.root() / "adapter"), "blocks.0.mlp.fc2");
    let _ = path.zeros("up_bias", &[2]);
    assert!(
        vs.variables()
            .contains_key("adapter.blocks.0.mlp.fc2.up_bias")
    );
}
