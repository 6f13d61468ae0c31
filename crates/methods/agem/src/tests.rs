use super::*;
use retain_stream::SplitKind;
use retain_train::testkit::{MethodFixture as Fixture, scalar, seeded_network};
use tch::Kind;

fn host(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap()
}

fn vector(values: &[f32]) -> Tensor {
    Tensor::from_slice(values)
}

#[test]
fn projection_matches_the_closed_form() {
    // ⟨g, g_ref⟩ = 1 − 2 = −1, ‖g_ref‖² = 2: g̃ = g + ½ g_ref = (1.5, −1.5, 3), and
    // ⟨g̃, g_ref⟩ = 0.
    let g_ref = vector(&[1.0, 1.0, 0.0]);
    let projected = project(&vector(&[1.0, -2.0, 3.0]), &g_ref);
    assert_eq!(host(&projected), vec![1.5, -1.5, 3.0]);
    assert_eq!(scalar(&projected.dot(&g_ref)), 0.0);
    // No conflict (⟨g, g_ref⟩ = 3 > 0, or = 0): unchanged, bit for bit.
    let g = vector(&[1.0, 2.0, 3.0]);
    assert_eq!(host(&project(&g, &g_ref)), host(&g));
    let orthogonal = vector(&[1.0, -1.0, 5.0]);
    assert_eq!(host(&project(&orthogonal, &g_ref)), host(&orthogonal));
    // A zero reference gradient changes nothing (no division by zero).
    assert_eq!(host(&project(&g, &vector(&[0.0; 3]))), host(&g));
}

#[test]
fn hook_projects_the_trainer_gradient_against_the_memory_gradient() {
    let fx = Fixture::new();
    let params = fx.network.vars.trainable_variables();
    let mut method = AGem::new(Params {
        memory_size: 10,
        memory_batch_size: 10,
    })
    .unwrap();
    method.before_task(&fx.task(0)).unwrap();
    let (indices, batch) = fx.batch(0, 5);
    // Empty memory during the first task: nothing to project against.
    fx.network
        .model
        .forward_t(&batch.inputs, true)
        .cross_entropy_for_logits(&batch.labels)
        .backward();
    let before = host(&flat_grad(&params));
    method.after_backward(&fx.step(0, &indices)).unwrap();
    assert_eq!(host(&flat_grad(&params)), before);
    method.after_task(&fx.task(0)).unwrap();
    assert_eq!(method.memory().unwrap().len(), 10);

    // Task 1: the memory batch is the whole memory, so g_ref is its gradient.
    method.before_task(&fx.task(1)).unwrap();
    let old = fx
        .stream
        .batch(SplitKind::Train, method.memory().unwrap().indices());
    let memory_loss = fx
        .network
        .model
        .forward_t(&old.inputs, true)
        .cross_entropy_for_logits(&old.labels);
    let g_ref = host(&flat_grad_of(&memory_loss, &params));
    // Batches of later tasks: some conflict with the memory, some do not; the hook must give
    // the closed form in both cases.
    let (mut conflicts, mut agreements) = (0, 0);
    for task in 1..5 {
        for start in [0usize, 10, 20] {
            for p in &params {
                let _ = p.grad().zero_();
            }
            let train = &fx.stream.tasks[task].train_indices[start..start + 10];
            let indices = Tensor::from_slice(train);
            let batch = fx.stream.batch(SplitKind::Train, &indices);
            fx.network
                .model
                .forward_t(&batch.inputs, true)
                .cross_entropy_for_logits(&batch.labels)
                .backward();
            let g = host(&flat_grad(&params));
            let dot: f64 = g.iter().zip(&g_ref).map(|(a, b)| a * b).sum();
            let norm: f64 = g_ref.iter().map(|x| x * x).sum();
            method.after_backward(&fx.step(task, &indices)).unwrap();
            let corrected = host(&flat_grad(&params));
            if dot < 0.0 {
                conflicts += 1;
                for ((got, gi), ri) in corrected.iter().zip(&g).zip(&g_ref) {
                    let want = gi - dot / norm * ri;
                    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
                }
                let after: f64 = corrected.iter().zip(&g_ref).map(|(a, b)| a * b).sum();
                assert!(after.abs() < 1e-5, "⟨g̃, g_ref⟩ = {after}");
            } else {
                agreements += 1;
                assert_eq!(corrected, g, "no conflict: untouched");
            }
        }
    }
    assert!(
        conflicts > 0 && agreements > 0,
        "{conflicts} conflicts, {agreements} agreements"
    );
}

#[test]
fn parameters_are_checked() {
    let table = |s: &str| -> toml::Table { s.parse().unwrap() };
    let params: Params = DESCRIPTOR.parse(&table("memory_size = 100")).unwrap();
    assert_eq!((params.memory_size, params.memory_batch_size), (100, 256));
    let err = from_params(&table("memories_per_task = 5"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unknown key `memories_per_task`"), "{err}");
    assert!(from_params(&table("memory_batch_size = 0")).is_err());
}

/// Regression: on permuted streams a stored index is `task·N + sample`, beyond the split's
/// `N` samples; the memory used to reject every task after the first
/// ("sample index 60045 is outside the training split").
#[test]
fn agem_memory_accepts_permuted_stream_indices() {
    let dataset = retain_train::testkit::synthetic_dataset(10, 6, 4);
    let mut config = retain_config::StreamConfig::split(
        retain_config::DatasetName::Mnist,
        3,
        1,
        vec![retain_config::Readout::DomainIl],
    );
    config.kind = retain_config::StreamKind::Permuted;
    config.classes_per_task = None;
    let stream = retain_stream::TaskStream::build(&dataset, &config, 0, tch::Device::Cpu).unwrap();
    let network = seeded_network(0, |path| {
        Box::new(retain_models::Mlp::new(path, 4, &[6], 10))
    });
    let mut method =
        from_params(&"memory_size = 40\nmemory_batch_size = 8".parse().unwrap()).unwrap();
    for task in 0..3 {
        let ctx = retain_train::testkit::task_context(&network, &stream, task);
        assert!(
            ctx.task
                .train_indices
                .iter()
                .all(|&i| i >= (task * 60) as i64)
        );
        method.before_task(&ctx).unwrap();
        method.after_task(&ctx).unwrap();
    }
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

/// The trainer's gradient of `batch`, projected by `method`'s `after_backward`.
fn projected(
    fx: &Fixture,
    method: &mut AGem,
    task: usize,
    indices: &Tensor,
    batch: &retain_stream::Batch,
) -> Vec<f64> {
    let params = fx.network.vars.trainable_variables();
    for p in &params {
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
    method.after_backward(&fx.step(task, indices)).unwrap();
    host(&flat_grad(&params))
}

#[test]
fn state_round_trips_into_a_fresh_method() {
    let fx = Fixture::new();
    let agem = || {
        AGem::new(Params {
            memory_size: 10,
            memory_batch_size: 4,
        })
        .unwrap()
    };
    let mut original = agem();
    let (indices, batch) = fx.batch(1, 10);
    original.before_task(&fx.task(0)).unwrap();
    original.after_task(&fx.task(0)).unwrap();
    original.before_task(&fx.task(1)).unwrap();
    projected(&fx, &mut original, 1, &indices, &batch);
    original.after_task(&fx.task(1)).unwrap();
    let state = original.state();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "memory.classes",
            "memory.class_counts",
            "memory.indices",
            "memory.rng",
            "memory.draws"
        ]
    );
    assert_eq!(state[2].1.size(), [10]);
    assert_eq!(state[4].1.int64_value(&[]), 1);

    let mut restored = agem();
    restored.load_state(copied(&state)).unwrap();
    assert_same_state(&restored.state(), &state);
    // The same memory batch on task 2, hence the same projected gradient, bit for bit.
    let (indices, batch) = fx.batch(2, 10);
    let mut gradients = Vec::new();
    for method in [&mut original, &mut restored] {
        method.before_task(&fx.task(2)).unwrap();
        gradients.push(projected(&fx, method, 2, &indices, &batch));
        method.after_task(&fx.task(2)).unwrap();
    }
    assert_eq!(gradients[0], gradients[1]);
    assert_same_state(&original.state(), &restored.state());
}

#[test]
fn malformed_state_is_refused_naming_the_tensor() {
    let mut method = AGem::new(Params {
        memory_size: 2,
        memory_batch_size: 4,
    })
    .unwrap();
    let state = vec![
        ("memory.classes".into(), Tensor::from_slice(&[0i64, 1])),
        ("memory.class_counts".into(), Tensor::from_slice(&[2i64, 1])),
        ("memory.indices".into(), Tensor::from_slice(&[0i64, 10, 1])),
        ("memory.rng".into(), Tensor::from(7i64)),
        ("memory.draws".into(), Tensor::from(0i64)),
    ];
    assert_eq!(
        method.load_state(state).unwrap_err().to_string(),
        "method `agem` failed: malformed state: `memory.indices` holds 3 samples, more than the \
         capacity 2"
    );
    assert_eq!(
        method
            .load_state(vec![("memory.indices".into(), Tensor::from_slice(&[0i64]))])
            .unwrap_err()
            .to_string(),
        "method `agem` failed: malformed state: no tensor `memory.classes`"
    );
}
