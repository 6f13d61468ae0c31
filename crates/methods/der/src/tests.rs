use super::*;
use retain_train::testkit::{MethodFixture as Fixture, scalar};

#[test]
fn logit_term_matches_hand_computation() {
    // Differences (1, 0, −1, −1): mean square 3/4; α = 0.5 gives 0.375.
    let logits = Tensor::from_slice(&[1.0f32, 2.0, 0.0, 0.0]).view([2, 2]);
    let stored = Tensor::from_slice(&[0.0f32, 2.0, 1.0, 1.0]).view([2, 2]);
    let term = scalar(&logit_term(0.5, &logits, &stored));
    assert!((term - 0.375).abs() < 1e-7, "{term}");
}

#[test]
fn hook_adds_logit_and_label_terms_for_stored_samples() {
    let fx = Fixture::new();
    let (alpha, beta) = (0.3, 0.7);
    let mut method = Der::new(Params {
        buffer_size: 50,
        replay_batch_size: 50,
        alpha,
        beta,
    })
    .unwrap();
    method.before_task(&fx.task(0)).unwrap();
    // Empty reservoir: plain cross-entropy; the batch and its logits are stored.
    let (first_indices, first) = fx.batch(0, 6);
    let loss = method.loss(&fx.step(0, &first_indices), &first).unwrap();
    let plain = fx
        .network
        .model
        .forward_t(&first.inputs, true)
        .cross_entropy_for_logits(&first.labels);
    assert_eq!(scalar(&loss), scalar(&plain));
    assert_eq!(method.reservoir().unwrap().len(), 6);
    // Move every logit by +1: the stored ones are now exactly 1 away, MSE = 1.
    {
        let _no_grad = tch::no_grad_guard();
        let mut bias = fx.network.vars.variables()["head.bias"].shallow_clone();
        let _ = bias.g_add_scalar_(1.0);
    }
    let (indices, batch) = fx.batch(1, 10);
    let loss = scalar(&method.loss(&fx.step(1, &indices), &batch).unwrap());
    let current = fx
        .network
        .model
        .forward_t(&batch.inputs, true)
        .cross_entropy_for_logits(&batch.labels);
    let replayed = fx
        .network
        .model
        .forward_t(&first.inputs, true)
        .cross_entropy_for_logits(&first.labels);
    let expected = scalar(&current) + alpha * 1.0 + beta * scalar(&replayed);
    assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
    assert_eq!(method.reservoir().unwrap().len(), 16);
}

#[test]
fn parameters_are_checked() {
    let table = |s: &str| -> toml::Table { s.parse().unwrap() };
    let params: Params = DESCRIPTOR.parse(&table("alpha = 0.2\nbeta = 1.0")).unwrap();
    assert_eq!(
        (params.alpha, params.beta, params.buffer_size),
        (0.2, 1.0, 500)
    );
    let err = from_params(&table("gamma = 1.0"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unknown key `gamma`"), "{err}");
    let err = from_params(&table("alpha = -1.0"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`alpha` must be a finite number ≥ 0 (got -1)"),
        "{err}"
    );
    assert!(from_params(&table("buffer_size = 0")).is_err());
}

#[test]
fn a_buffer_size_beyond_the_host_memory_is_refused_naming_the_key() {
    let params: toml::Table = toml::from_str("buffer_size = 1000000000000").unwrap();
    let err = from_params(&params).err().unwrap().to_string();
    assert!(
        err.contains("`method.buffer_size` = 1000000000000 needs at least"),
        "{err}"
    );
    assert!(err.contains("more than this host's"), "{err}");
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

fn params() -> Params {
    Params {
        buffer_size: 8,
        replay_batch_size: 4,
        alpha: 0.3,
        beta: 0.5,
    }
}

#[test]
fn state_round_trips_into_a_fresh_method() {
    let fx = Fixture::new();
    let mut original = Der::new(params()).unwrap();
    original.before_task(&fx.task(0)).unwrap();
    for n in [5, 6, 7] {
        let (indices, batch) = fx.batch(0, n);
        let _ = original.loss(&fx.step(0, &indices), &batch).unwrap();
    }
    let state = original.state();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "memory.indices",
            "memory.logits",
            "memory.offered",
            "memory.draws"
        ]
    );
    // 18 samples offered to 8 slots with their 10 logits; two draws per step after the first.
    assert_eq!(state[1].1.size(), [8, 10]);
    assert_eq!(state[3].1.int64_value(&[]), 4);

    let mut restored = Der::new(params()).unwrap();
    restored.load_state(copied(&state)).unwrap();
    assert_same_state(&restored.state(), &state);
    let (indices, batch) = fx.batch(1, 6);
    let mut losses = Vec::new();
    for method in [&mut original, &mut restored] {
        method.before_task(&fx.task(1)).unwrap();
        losses.push(scalar(&method.loss(&fx.step(1, &indices), &batch).unwrap()));
    }
    assert_eq!(losses[0], losses[1]);
    assert_same_state(&original.state(), &restored.state());
}

#[test]
fn malformed_state_is_refused_naming_the_tensor() {
    let state = || {
        vec![
            ("memory.indices".to_owned(), Tensor::from_slice(&[3i64, 4])),
            (
                "memory.logits".to_owned(),
                Tensor::zeros([2, 3], tch::kind::FLOAT_CPU),
            ),
            ("memory.offered".to_owned(), Tensor::from(2i64)),
            ("memory.draws".to_owned(), Tensor::from(0i64)),
        ]
    };
    let error = |state: Vec<(String, Tensor)>| {
        Der::new(params())
            .unwrap()
            .load_state(state)
            .unwrap_err()
            .to_string()
    };
    let mut no_logits = state();
    let _ = no_logits.remove(1);
    assert_eq!(
        error(no_logits),
        "method `der` failed: malformed state: no tensor `memory.logits`"
    );
    let mut rows = state();
    rows[1].1 = Tensor::zeros([3, 3], tch::kind::FLOAT_CPU);
    assert_eq!(
        error(rows),
        "method `der` failed: malformed state: `memory.logits` has 3 rows for 2 stored samples"
    );
    // Logits 3 wide are well-formed, but the stream has 10 classes: refused when the
    // reservoir is rebuilt for it.
    let fx = Fixture::new();
    let mut method = Der::new(params()).unwrap();
    method.load_state(state()).unwrap();
    assert_eq!(
        method.before_task(&fx.task(0)).unwrap_err().to_string(),
        "method `der` failed: malformed state: the reservoir keeps logits of shape \
         Some([2, 10]), the state Some([2, 3])"
    );
}
