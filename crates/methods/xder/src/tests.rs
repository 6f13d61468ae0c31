use super::*;
use retain_train::testkit::{MethodFixture as Fixture, scalar};

fn close(a: &Tensor, b: &Tensor) -> bool {
    a.allclose(b, 1e-5, 1e-6, false)
}

#[test]
fn logit_update_replaces_the_region_scaled_below_the_true_class() {
    // Row 0: true class 1 (stored 2), new maximum over the region 4 > 2: scaled by
    // 0.85 · 2 / 4 = 0.425. Row 1: true class 1 (stored 3), maximum 2 < 3: copied as is.
    let old = Tensor::from_slice(&[1.0f32, 2.0, 0.5, 0.1, 0.0, 3.0, 0.0, 0.0]).view([2, 4]);
    let new = Tensor::from_slice(&[9.0f32, 9.0, 4.0, 1.0, 5.0, 5.0, 1.0, 2.0]).view([2, 4]);
    let labels = Tensor::from_slice(&[1i64, 1]);
    let region = Tensor::from_slice(&[false, false, true, true]);
    let got = update_logits(&old, &new, &labels, &region, 0.85);
    let expected = Tensor::from_slice(&[1.0f32, 2.0, 1.7, 0.425, 0.0, 3.0, 1.0, 2.0]).view([2, 4]);
    assert!(close(&got, &expected), "{got:?}");
    // Damping a sample's own past heads (old = new): class 0 out-scores the true class 2.
    let own = Tensor::from_slice(&[4.0f32, 1.0, 2.0, 0.0]).view([1, 4]);
    let past = Tensor::from_slice(&[true, true, false, false]);
    let got = update_logits(&own, &own, &Tensor::from_slice(&[2i64]), &past, 0.5);
    // 0.5 · 2 / 4 = 0.25 on classes 0 and 1.
    let expected = Tensor::from_slice(&[1.0f32, 0.25, 2.0, 0.0]).view([1, 4]);
    assert!(close(&got, &expected), "{got:?}");
}

#[test]
fn future_constraint_averages_the_violations_of_the_counted_rows() {
    // Own classes {0, 1}, future {3}; v = max future + 0.3 − max own.
    let logits = Tensor::from_slice(&[
        1.0f32, 0.0, 0.5, 2.0, // v = 2 + 0.3 − 1 = 1.3
        3.0, 0.0, 0.0, 1.0, // v = −1.7: satisfied
        0.0, 0.2, 0.0, 0.4, // v = 0.5
        0.0, 0.0, 0.0, 9.0, // v = 9.3, but not counted
    ])
    .view([4, 4]);
    let future = Tensor::from_slice(&[false, false, false, true]);
    let own = Tensor::from_slice(&[true, true, false, false])
        .unsqueeze(0)
        .expand([4, -1], false);
    let weights = Tensor::from_slice(&[true, true, true, false]);
    let got = scalar(&future_constraint(
        &logits, &future, &own, &weights, 0.3, 0.1,
    ));
    assert!((got - 0.1 * (1.3 + 0.5) / 2.0).abs() < 1e-6, "{got}");
    // Nothing violated: zero.
    let none = Tensor::from_slice(&[false, true, false, false]);
    let got = scalar(&future_constraint(&logits, &future, &own, &none, 0.3, 0.1));
    assert_eq!(got, 0.0);
}

#[test]
fn quotas_and_reduction_are_class_balanced() {
    let mut rng = SplitMix64::new(3);
    let quota = class_quota(7, 3, &mut rng);
    assert_eq!(quota.iter().sum::<usize>(), 7);
    assert!(quota.iter().all(|&q| q == 2 || q == 3), "{quota:?}");
    // Classes ascending, each its first two slots in memory order.
    let labels = [3i64, 1, 3, 1, 1, 3, 0];
    assert_eq!(reduced_slots(&labels, 2), [6, 1, 3, 0, 2]);
}

fn params() -> Params {
    Params {
        buffer_size: 10,
        replay_batch_size: 4,
        ..Params::default()
    }
}

fn counts(labels: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(&labels.bincount::<Tensor>(None, 10)).unwrap()
}

#[test]
fn memory_is_filled_at_task_ends_class_balanced_and_its_past_logits_updated() {
    let fx = Fixture::new();
    let gamma = 0.85;
    let mut method = Xder::new(params()).unwrap();
    method.before_task(&fx.task(0)).unwrap();
    let (indices, batch) = fx.batch(0, 6);
    let _ = method.loss(&fx.step(0, &indices), &batch).unwrap();
    assert!(method.is_empty(), "nothing is stored during a task");
    method.after_task(&fx.task(0)).unwrap();
    let (idx0, labels0, logits0, updated0) = method.contents().unwrap();
    // Task 0 has classes 0 and 1: 5 each.
    assert_eq!(counts(&labels0), [5, 5, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(Vec::<i64>::try_from(&updated0).unwrap(), [0; 10]);
    // First task: the model's outputs as they are (no past heads to damp).
    let model_out = |idx: &Tensor| {
        let _g = tch::no_grad_guard();
        let batch = fx.stream.batch(SplitKind::Train, idx);
        fx.network.model.forward_t(&batch.inputs, false)
    };
    assert!(close(&logits0, &model_out(&idx0)));

    // Change the model, then end task 1.
    {
        let _no_grad = tch::no_grad_guard();
        let mut bias = fx.network.vars.variables()["head.bias"].shallow_clone();
        let _ = bias.g_add_(&Tensor::from_slice(&[
            0.0f32, 0.0, 3.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ]));
    }
    method.before_task(&fx.task(1)).unwrap();
    method.after_task(&fx.task(1)).unwrap();
    let (idx1, labels1, logits1, updated1) = method.contents().unwrap();
    // Reduced to ⌊10 / 4⌋ = 2 per old class; 6 free slots, 3 per class of task 1.
    assert_eq!(counts(&labels1), [2, 2, 3, 3, 0, 0, 0, 0, 0, 0]);
    assert_eq!(Vec::<i64>::try_from(&updated1).unwrap(), [1; 10]);
    let host0 = Vec::<i64>::try_from(&idx0).unwrap();
    let host1 = Vec::<i64>::try_from(&idx1).unwrap();
    let heads = Xder::heads(&fx.task(1)).unwrap();
    let out1 = model_out(&idx1);
    // Old samples: the first two of each class kept; heads of tasks ≥ 1 replaced by the
    // rule; task 0's head unchanged.
    let old_rows: Vec<i64> = (0..4).collect();
    let old_slots: Vec<i64> = host1[..4]
        .iter()
        .map(|i| host0.iter().position(|j| j == i).unwrap() as i64)
        .collect();
    let host_labels0 = Vec::<i64>::try_from(&labels0).unwrap();
    assert_eq!(old_slots, reduced_slots(&host_labels0, 2));
    let rows = Tensor::from_slice(&old_rows);
    let slots = Tensor::from_slice(&old_slots);
    let expected = update_logits(
        &logits0.index_select(0, &slots),
        &out1.index_select(0, &rows),
        &labels1.index_select(0, &rows),
        &heads.onward,
        gamma,
    );
    assert!(close(&logits1.index_select(0, &rows), &expected));
    // New samples: the model's outputs, task 0's head damped below the true class.
    let new_rows = Tensor::arange_start(4, 10, (Kind::Int64, Device::Cpu));
    let out_new = out1.index_select(0, &new_rows);
    let expected = update_logits(
        &out_new,
        &out_new,
        &labels1.index_select(0, &new_rows),
        &heads.past,
        gamma,
    );
    assert!(close(&logits1.index_select(0, &new_rows), &expected));
}

#[test]
fn step_adds_the_terms_and_updates_replayed_logits_online() {
    let fx = Fixture::new();
    let mut method = Xder::new(Params {
        buffer_size: 6,
        replay_batch_size: 6,
        ..Params::default()
    })
    .unwrap();
    method.before_task(&fx.task(0)).unwrap();
    // Empty memory: present-head cross-entropy plus the future constraint.
    let (indices, batch) = fx.batch(0, 8);
    let loss = scalar(&method.loss(&fx.step(0, &indices), &batch).unwrap());
    let heads = Xder::heads(&fx.task(0)).unwrap();
    let out = fx.network.model.forward_t(&batch.inputs, true);
    let ce = out
        .masked_fill(&heads.present.logical_not().unsqueeze(0), f64::NEG_INFINITY)
        .cross_entropy_for_logits(&batch.labels);
    let own = heads.present.unsqueeze(0).expand([8, -1], false);
    let all = Tensor::ones([8], (Kind::Bool, Device::Cpu));
    let constr = future_constraint(&out, &heads.future, &own, &all, 0.3, 0.01);
    assert!((loss - scalar(&(ce + constr))).abs() < 1e-6);
    method.after_task(&fx.task(0)).unwrap();
    let (_, _, before, _) = method.contents().unwrap();

    // Task 1: every stored sample is drawn (6 of 6), offered once, updated (coin < 1 / 1).
    method.before_task(&fx.task(1)).unwrap();
    let (indices, batch) = fx.batch(1, 4);
    let loss = scalar(&method.loss(&fx.step(1, &indices), &batch).unwrap());
    assert!(loss.is_finite());
    let (idx, labels, after, updated) = method.contents().unwrap();
    assert_eq!(Vec::<i64>::try_from(&updated).unwrap(), [1; 6]);
    let heads = Xder::heads(&fx.task(1)).unwrap();
    let outputs = fx
        .network
        .model
        .forward_t(&fx.stream.batch(SplitKind::Train, &idx).inputs, true)
        .detach();
    let expected = update_logits(&before, &outputs, &labels, &heads.onward, 0.85);
    assert!(close(&after, &expected), "{after:?} vs {expected:?}");
}

fn copied(state: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    state.iter().map(|(n, t)| (n.clone(), t.copy())).collect()
}

fn assert_same_state(a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    let names = |s: &[(String, Tensor)]| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(a), names(b));
    for ((name, x), (_, y)) in a.iter().zip(b) {
        assert!(x.equal(y), "`{name}` differs: {x:?} vs {y:?}");
    }
}

#[test]
fn state_round_trips_into_a_fresh_method() {
    let fx = Fixture::new();
    let mut original = Xder::new(params()).unwrap();
    assert!(original.state().is_empty());
    original.before_task(&fx.task(0)).unwrap();
    original.after_task(&fx.task(0)).unwrap();
    original.before_task(&fx.task(1)).unwrap();
    for n in [5, 6] {
        let (indices, batch) = fx.batch(1, n);
        let _ = original.loss(&fx.step(1, &indices), &batch).unwrap();
    }
    original.after_task(&fx.task(1)).unwrap();
    let state = original.state();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "memory.indices",
            "memory.labels",
            "memory.logits",
            "memory.updated",
            "memory.draws"
        ]
    );
    assert_eq!(state[2].1.size(), [10, 10]);
    assert_eq!(state[4].1.int64_value(&[]), 6);

    let mut restored = Xder::new(params()).unwrap();
    restored.load_state(copied(&state)).unwrap();
    assert_same_state(&restored.state(), &state);
    let (indices, batch) = fx.batch(2, 6);
    let mut losses = Vec::new();
    for method in [&mut original, &mut restored] {
        method.before_task(&fx.task(2)).unwrap();
        losses.push(scalar(&method.loss(&fx.step(2, &indices), &batch).unwrap()));
        method.after_task(&fx.task(2)).unwrap();
    }
    assert_eq!(losses[0], losses[1]);
    assert_same_state(&original.state(), &restored.state());
}

#[test]
fn malformed_state_is_refused_naming_the_tensor() {
    let state = || {
        vec![
            ("memory.indices".to_owned(), Tensor::from_slice(&[3i64, 4])),
            ("memory.labels".to_owned(), Tensor::from_slice(&[3i64, 4])),
            (
                "memory.logits".to_owned(),
                Tensor::zeros([2, 3], tch::kind::FLOAT_CPU),
            ),
            ("memory.updated".to_owned(), Tensor::from_slice(&[0i64, 0])),
            ("memory.draws".to_owned(), Tensor::from(0i64)),
        ]
    };
    let error = |state: Vec<(String, Tensor)>| {
        Xder::new(params())
            .unwrap()
            .load_state(state)
            .unwrap_err()
            .to_string()
    };
    let mut no_logits = state();
    let _ = no_logits.remove(2);
    assert_eq!(
        error(no_logits),
        "method `xder` failed: malformed state: no tensor `memory.logits`"
    );
    let mut rows = state();
    rows[1].1 = Tensor::from_slice(&[1i64]);
    assert_eq!(
        error(rows),
        "method `xder` failed: malformed state: `memory.labels` has 1 rows for 2 stored samples"
    );
    let fx = Fixture::new();
    let mut method = Xder::new(params()).unwrap();
    method.load_state(state()).unwrap();
    assert_eq!(
        method.before_task(&fx.task(0)).unwrap_err().to_string(),
        "method `xder` failed: malformed state: `memory.logits` is 3 wide, the stream has 10 classes"
    );
}

#[test]
fn bad_hyper_parameters_are_refused_naming_the_key() {
    let table = |s: &str| -> toml::Table { s.parse().unwrap() };
    let params: Params = DESCRIPTOR.parse(&table("alpha = 0.2")).unwrap();
    assert_eq!(
        (
            params.alpha,
            params.beta,
            params.gamma,
            params.m,
            params.eta
        ),
        (0.2, 0.8, 0.85, 0.3, 0.01)
    );
    let err = |s: &str| from_params(&table(s)).err().unwrap().to_string();
    assert!(err("lambd = 0.05").contains("unknown key `lambd`"));
    for (toml, key) in [
        ("alpha = -1.0", "`alpha`"),
        ("beta = -0.5", "`beta`"),
        ("m = -0.1", "`m`"),
        ("eta = -1.0", "`eta`"),
        ("gamma = 0.0", "`gamma`"),
        ("gamma = 1.5", "`gamma`"),
        ("buffer_size = 0", "`buffer_size`"),
        ("replay_batch_size = 0", "`replay_batch_size`"),
    ] {
        let e = err(toml);
        assert!(e.contains(key), "{toml}: {e}");
    }
    let e = err("buffer_size = 1000000000000");
    assert!(
        e.contains("`method.buffer_size` = 1000000000000 needs at least"),
        "{e}"
    );
}
