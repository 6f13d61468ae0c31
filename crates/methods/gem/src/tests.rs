use super::*;
use retain_stream::SplitKind;
use retain_train::testkit::MethodFixture as Fixture;

fn host(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap()
}

/// Zeroes gradients, back-propagates the cross-entropy of `batch`, returns the flat gradient.
fn backward(fx: &Fixture, params: &[Tensor], batch: &retain_stream::Batch) -> Vec<f64> {
    for p in params {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    fx.network
        .model
        .forward_t(&batch.inputs, true)
        .cross_entropy_for_logits(&batch.labels)
        .backward();
    host(&flat_grad(params))
}

#[test]
fn projection_on_the_device_matches_the_host_reference() {
    let fx = Fixture::new();
    let params = fx.network.vars.trainable_variables();
    let mut method = Gem::new(Params {
        memories_per_task: 8,
        margin: 0.5,
    })
    .unwrap();
    for task in 0..2 {
        method.before_task(&fx.task(task)).unwrap();
        method.after_task(&fx.task(task)).unwrap();
    }
    method.before_task(&fx.task(2)).unwrap();
    let memories: Vec<Vec<f64>> = method
        .memory()
        .unwrap()
        .tasks()
        .iter()
        .map(|indices| {
            let old = fx.stream.batch(SplitKind::Train, indices);
            let loss = fx
                .network
                .model
                .forward_t(&old.inputs, true)
                .cross_entropy_for_logits(&old.labels);
            host(&flat_grad_of(&loss, &params))
        })
        .collect();
    assert_eq!(memories.len(), 2);
    // New classes pull the shared head away from the old ones: the constraints bind.
    let (indices, batch) = fx.batch(2, 10);
    let g = backward(&fx, &params, &batch);
    assert!(memories.iter().any(|m| retain_qp::dot(m, &g) < 0.0));
    let expected = retain_qp::gem_project(&memories, &g, 0.5, RIDGE).unwrap();
    method.after_backward(&fx.step(2, &indices)).unwrap();
    assert_eq!(method.projected_steps(), 1);
    let corrected = host(&flat_grad(&params));
    let scale = expected.iter().fold(0.0f64, |a, x| a.max(x.abs()));
    for (got, want) in corrected.iter().zip(&expected) {
        assert!((got - want).abs() <= 1e-4 * scale, "{got} vs {want}");
    }
    // Every memory's loss is non-increasing to first order after the projection (up to the
    // ridge's relaxation ridge·v_k and float32 rounding).
    for memory in &memories {
        assert!(retain_qp::dot(memory, &corrected) >= -1e-3 * scale * scale);
    }
}

#[test]
fn a_gradient_that_agrees_with_every_memory_is_untouched() {
    let fx = Fixture::new();
    let params = fx.network.vars.trainable_variables();
    let mut method = Gem::new(Params {
        memories_per_task: 8,
        margin: 0.5,
    })
    .unwrap();
    method.before_task(&fx.task(0)).unwrap();
    method.after_task(&fx.task(0)).unwrap();
    method.before_task(&fx.task(1)).unwrap();
    // The batch is task 0's memory itself: g = g_1, so ⟨g, g_1⟩ = ‖g‖² ≥ 0.
    let indices = method.memory().unwrap().tasks()[0].shallow_clone();
    let batch = fx.stream.batch(SplitKind::Train, &indices);
    let g = backward(&fx, &params, &batch);
    method.after_backward(&fx.step(1, &indices)).unwrap();
    assert_eq!(method.projected_steps(), 0);
    assert_eq!(host(&flat_grad(&params)), g, "bit-for-bit unchanged");
}

#[test]
fn no_memory_no_change() {
    let fx = Fixture::new();
    let params = fx.network.vars.trainable_variables();
    let mut method = Gem::new(Params::default()).unwrap();
    method.before_task(&fx.task(0)).unwrap();
    let (indices, batch) = fx.batch(0, 10);
    let g = backward(&fx, &params, &batch);
    method.after_backward(&fx.step(0, &indices)).unwrap();
    assert_eq!(host(&flat_grad(&params)), g);
}

#[test]
fn parameters_are_checked() {
    let table = |s: &str| -> toml::Table { s.parse().unwrap() };
    let params: Params = DESCRIPTOR.parse(&table("")).unwrap();
    assert_eq!(params, Params::default());
    assert_eq!((params.memories_per_task, params.margin), (256, 0.5));
    let err = from_params(&table("memory_strength = 1.0"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unknown key `memory_strength`"), "{err}");
    let err = from_params(&table("margin = -0.5"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`margin` must be a finite number ≥ 0 (got -0.5)"),
        "{err}"
    );
    assert!(from_params(&table("memories_per_task = 0")).is_err());
}

#[test]
fn batched_memory_gradients_match_one_pass_per_task() {
    let fx = Fixture::new();
    let params = fx.network.vars.trainable_variables();
    let mut method = Gem::new(Params {
        memories_per_task: 8,
        margin: 0.5,
    })
    .unwrap();
    for task in 0..3 {
        method.before_task(&fx.task(task)).unwrap();
        method.after_task(&fx.task(task)).unwrap();
    }
    let memory = method.memory().unwrap();
    let reference = Tensor::stack(
        &memory
            .tasks()
            .iter()
            .map(|indices| {
                let old = fx.stream.batch(SplitKind::Train, indices);
                let loss = fx
                    .network
                    .model
                    .forward_t(&old.inputs, true)
                    .cross_entropy_for_logits(&old.labels);
                flat_grad_of(&loss, &params)
            })
            .collect::<Vec<_>>(),
        0,
    );
    let (indices, _) = fx.batch(3, 10);
    let ctx = fx.step(3, &indices);
    // The fixture's MLP batches the memories' gradients ...
    let batched = ctx
        .model()
        .per_group_gradients(
            &Tensor::zeros([8, 4], (Kind::Float, Device::Cpu)),
            &Tensor::zeros([8], (Kind::Int64, Device::Cpu)),
            &[8],
            &params,
            None,
        )
        .is_some();
    assert!(batched);
    let close = |got: &Tensor| f64::try_from((got - &reference).abs().max()).unwrap() <= 1e-5;
    assert_eq!(reference.size()[0], 3);
    assert!(close(&memory_gradients(&ctx, memory, &params)));
    // ... and with an adapter attached (B = 0: the same function) it falls back to one pass
    // per task, with the same result.
    let adapter = retain_models::LowRank {
        a: Tensor::ones([1, 4], (Kind::Float, Device::Cpu)),
        b: Tensor::zeros([6, 1], (Kind::Float, Device::Cpu)),
        scale: 1.0,
    };
    assert!(ctx.model().set_adapter("hidden.0", Some(adapter)));
    let none = ctx.model().per_group_gradients(
        &Tensor::zeros([8, 4], (Kind::Float, Device::Cpu)),
        &Tensor::zeros([8], (Kind::Int64, Device::Cpu)),
        &[8],
        &params,
        None,
    );
    assert!(none.is_none());
    assert!(close(&memory_gradients(&ctx, memory, &params)));
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
    let params = fx.network.vars.trainable_variables();
    let gem = || {
        Gem::new(Params {
            memories_per_task: 8,
            margin: 0.5,
        })
        .unwrap()
    };
    let mut original = gem();
    for task in 0..2 {
        original.before_task(&fx.task(task)).unwrap();
        original.after_task(&fx.task(task)).unwrap();
    }
    let state = original.state();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["memory.task0", "memory.task1", "memory.rng"]);
    assert_eq!(state[0].1.size(), [8]);

    let mut restored = gem();
    restored.load_state(copied(&state)).unwrap();
    assert_same_state(&restored.state(), &state);
    // The same projected gradient on task 2, bit for bit, and the same memory of it.
    let (indices, batch) = fx.batch(2, 10);
    let mut projected = Vec::new();
    for method in [&mut original, &mut restored] {
        method.before_task(&fx.task(2)).unwrap();
        backward(&fx, &params, &batch);
        method.after_backward(&fx.step(2, &indices)).unwrap();
        assert_eq!(method.projected_steps(), 1);
        projected.push(host(&flat_grad(&params)));
        method.after_task(&fx.task(2)).unwrap();
    }
    assert_eq!(projected[0], projected[1]);
    assert_same_state(&original.state(), &restored.state());
}

#[test]
fn malformed_state_is_refused_naming_the_tensor() {
    let error = |state: Vec<(String, Tensor)>| {
        Gem::new(Params {
            memories_per_task: 2,
            margin: 0.5,
        })
        .unwrap()
        .load_state(state)
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        error(vec![(
            "memory.task0".into(),
            Tensor::from_slice(&[1i64, 2])
        )]),
        "method `gem` failed: malformed state: no tensor `memory.rng`"
    );
    assert_eq!(
        error(vec![
            ("memory.task0".into(), Tensor::from_slice(&[1i64, 2, 3])),
            ("memory.rng".into(), Tensor::from(7i64)),
        ]),
        "method `gem` failed: malformed state: `memory.task0` holds 3 samples, more than \
         `memories_per_task` = 2"
    );
    assert_eq!(
        error(vec![
            ("memory.task1".into(), Tensor::from_slice(&[1i64])),
            ("memory.rng".into(), Tensor::from(7i64)),
        ]),
        "method `gem` failed: malformed state: unexpected tensor(s) `memory.task1`"
    );
}
