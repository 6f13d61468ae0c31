use super::*;
use retain_train::testkit::{MethodFixture as Fixture, scalar};

fn table(source: &str) -> toml::Table {
    source.parse().unwrap()
}

fn close(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && (a - b).abs().max().double_value(&[]) < 1e-5
}

fn cbf_off() -> Lucir {
    Lucir::new(Params {
        cbf_epochs: 0,
        ..Params::default()
    })
    .unwrap()
}

#[test]
fn parameters_have_the_reference_defaults_and_bad_ones_are_refused() {
    let params = Params::default();
    assert_eq!(
        (
            params.memory_per_class,
            params.lambda_base,
            params.margin,
            params.k
        ),
        (20, 5.0, 0.5, 2)
    );
    assert_eq!(
        (
            params.margin_weight,
            params.cbf_epochs,
            params.cbf_lr,
            params.cbf_batch_size
        ),
        (1.0, 20, 0.01, 128)
    );
    let refused = |source: &str| from_params(&table(source)).err().unwrap().to_string();
    for (source, message) in [
        (
            "memory_per_class = 0",
            "`memory_per_class` must be at least 1",
        ),
        (
            "lambda_base = -1.0",
            "`lambda_base` must be finite and ≥ 0, got -1",
        ),
        ("margin = nan", "`margin` must be finite and ≥ 0"),
        (
            "margin_weight = -0.5",
            "`margin_weight` must be finite and ≥ 0",
        ),
        ("k = 0", "`k` must be at least 1"),
        ("cbf_lr = 0.0", "`cbf_lr` must be finite and > 0, got 0"),
        ("cbf_batch_size = 0", "`cbf_batch_size` must be at least 1"),
        (
            "memory_per_class = 9223372036854775807",
            "method.memory_per_class",
        ),
        ("lamda = 5.0", "unknown key `lamda`"),
    ] {
        let error = refused(source);
        assert!(error.contains(message), "{source}: {error}");
        assert!(error.contains("`lucir`"), "{error}");
    }
    DESCRIPTOR
        .parse::<Params>(&table(DESCRIPTOR.example))
        .unwrap();
}

#[test]
fn cosine_scores_are_normalised_dot_products() {
    let features = Tensor::from_slice(&[3.0f32, 4.0, 1.0, 0.0]).reshape([2, 2]);
    let weights = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 2.0, 1.0, 1.0]).reshape([3, 2]);
    let r = std::f32::consts::FRAC_1_SQRT_2;
    let expected =
        Tensor::from_slice(&[0.6f32, 0.8, 0.7 * 2f32.sqrt(), 1.0, 0.0, r]).reshape([2, 3]);
    assert!(close(&cosine_scores(&features, &weights), &expected));
    // A zero feature scores 0 everywhere instead of NaN.
    let zero = Tensor::zeros([1, 2], (Kind::Float, Device::Cpu));
    assert_eq!(
        cosine_scores(&zero, &weights)
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );
}

#[test]
fn evaluation_reads_sigma_times_the_cosine_of_features_and_head_rows() {
    let fx = Fixture::new();
    let mut method = cbf_off();
    let (_, batch) = fx.batch(0, 5);
    let features = fx.network.model.features(&batch.inputs, false);
    let weight = head_weight(&fx.network).unwrap();
    // Before σ exists: σ = 1.
    let before = method.eval_logits(&fx.network, &batch.inputs).unwrap();
    assert!(close(&before, &cosine_scores(&features, &weight)));
    method.before_task(&fx.task(0)).unwrap();
    let sigma = fx.network.vars.variables()[SIGMA].shallow_clone();
    assert_eq!(scalar(&sigma), 1.0);
    tch::no_grad(|| {
        let _ = sigma.shallow_clone().fill_(2.5);
    });
    let logits = method.eval_logits(&fx.network, &batch.inputs).unwrap();
    assert!(close(&logits, &(cosine_scores(&features, &weight) * 2.5)));
    // The head's bias is not used: changing it changes nothing, and it no longer trains.
    let bias = fx.network.vars.variables()["head.bias"].shallow_clone();
    assert!(!bias.requires_grad());
    tch::no_grad(|| {
        let _ = bias.shallow_clone().fill_(100.0);
    });
    let again = method.eval_logits(&fx.network, &batch.inputs).unwrap();
    assert!(close(&logits, &again));
    // σ is trainable, so the run's optimiser picks it up.
    assert!(sigma.requires_grad());
}

#[test]
fn less_forget_is_one_minus_the_mean_cosine_with_the_adaptive_weight() {
    let new = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 1.0]).reshape([2, 2]);
    let old = Tensor::from_slice(&[0.0f32, 1.0, 2.0, 2.0]).reshape([2, 2]);
    // cos = 0 and 1: (1 + 0) / 2.
    assert!((scalar(&less_forget_loss(&new, &old)) - 0.5).abs() < 1e-6);
    // λ = λ_base · sqrt(|C_old| / |C_new|).
    assert!((adaptive_lambda(5.0, 8, 2) - 10.0).abs() < 1e-12);
    assert!((adaptive_lambda(5.0, 2, 2) - 5.0).abs() < 1e-12);
    let fx = Fixture::new();
    let mut method = cbf_off();
    method.before_task(&fx.task(0)).unwrap();
    assert_eq!(method.lambda(), None);
    method.after_task(&fx.task(0)).unwrap();
    method.before_task(&fx.task(1)).unwrap();
    assert!((method.lambda().unwrap() - 5.0).abs() < 1e-12);
    method.after_task(&fx.task(1)).unwrap();
    method.before_task(&fx.task(3)).unwrap();
    // Tasks 0-2 before task 3: 6 old classes, 2 new.
    assert!((method.lambda().unwrap() - 5.0 * 3f64.sqrt()).abs() < 1e-12);
}

#[test]
fn margin_ranking_hinges_old_samples_against_their_top_k_new_scores() {
    // Classes 0, 1 old; 2, 3, 4 new; class 5 neither (not yet seen).
    let old = Tensor::from_slice(&[true, true, false, false, false, false]);
    let new = Tensor::from_slice(&[false, false, true, true, true, false]);
    let scores = Tensor::from_slice(&[
        0.9f32, 0.0, 0.5, 0.2, 0.1, 0.99, // label 0: negatives 0.5, 0.2
        0.0, 0.3, 0.6, -0.1, 0.4, 0.0, // label 1: negatives 0.6, 0.4
        0.0, 0.0, 0.9, 0.9, 0.9, 0.0, // label 2: new, ignored
    ])
    .reshape([3, 6]);
    let labels = Tensor::from_slice(&[0i64, 1, 2]);
    let m = 0.5;
    // Sample 0: max(0, 0.5 − 0.9 + 0.5) = 0.1, max(0, 0.5 − 0.9 + 0.2) = 0.
    // Sample 1: 0.5 − 0.3 + 0.6 = 0.8, 0.5 − 0.3 + 0.4 = 0.6. Mean over 2·2 pairs.
    let k2 = margin_ranking_loss(&scores, &labels, &old, &new, 2, m);
    assert!((scalar(&k2) - (0.1 + 0.8 + 0.6) / 4.0).abs() < 1e-6);
    // K = 1: the hardest only.
    let k1 = margin_ranking_loss(&scores, &labels, &old, &new, 1, m);
    assert!((scalar(&k1) - (0.1 + 0.8) / 2.0).abs() < 1e-6);
    // No old sample in the batch: zero.
    let only_new = Tensor::from_slice(&[2i64, 3, 4]);
    assert_eq!(
        scalar(&margin_ranking_loss(&scores, &only_new, &old, &new, 2, m)),
        0.0
    );
}

#[test]
fn herding_picks_the_samples_that_track_the_mean() {
    // The mean of the four rows is (0.5, 0.5)-ish direction; row 3 is nearest to it.
    let features = normalize(
        &Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 0.9, 0.1, 0.7, 0.7]).reshape([4, 2]),
    );
    let picked = herding(&features, 2);
    assert_eq!(picked[0], 3);
    assert_eq!(picked.len(), 2);
    assert_eq!(herding(&features, 10).len(), 4);
}

#[test]
fn the_loss_is_cosine_cross_entropy_then_adds_both_constraints() {
    let fx = Fixture::new();
    let mut method = cbf_off();
    method.before_task(&fx.task(0)).unwrap();
    let (indices, batch) = fx.batch(0, 8);
    let loss = method.loss(&fx.step(0, &indices), &batch).unwrap();
    let weight = head_weight(&fx.network).unwrap();
    let scores = cosine_scores(&fx.network.model.features(&batch.inputs, true), &weight);
    assert!((scalar(&loss) - scalar(&scores.cross_entropy_for_logits(&batch.labels))).abs() < 1e-6);
    method.after_task(&fx.task(0)).unwrap();
    assert_eq!(method.memory_len(), 2 * 20);
    method.before_task(&fx.task(1)).unwrap();
    // A batch of task 1 with exemplars of task 0.
    let mut mixed: Vec<i64> = fx.stream.tasks[1].train_indices[..4].to_vec();
    mixed.extend(&method.memory()[&0][..3]);
    let indices = Tensor::from_slice(&mixed);
    let batch = fx.stream.batch(retain_stream::SplitKind::Train, &indices);
    // The teacher is the network itself now: no less-forget term yet.
    let loss = method.loss(&fx.step(1, &indices), &batch).unwrap();
    let scores = cosine_scores(&fx.network.model.features(&batch.inputs, true), &weight);
    let classes = |c: &[i64]| class_mask(10, c.iter().copied(), Device::Cpu);
    let mr = margin_ranking_loss(
        &scores,
        &batch.labels,
        &classes(&[0, 1]),
        &classes(&[2, 3]),
        2,
        0.5,
    );
    assert!(scalar(&mr) > 0.0);
    let expected = scalar(&scores.cross_entropy_for_logits(&batch.labels)) + scalar(&mr);
    assert!(
        (scalar(&loss) - expected).abs() < 1e-5,
        "{} vs {expected}",
        scalar(&loss)
    );
    // Once the model moves, the less-forget term is λ·(1 − cos) against the frozen copy.
    tch::no_grad(|| {
        for (i, (_, p)) in fx.network.parameters().into_iter().enumerate() {
            let noise = retain_train::testkit::seeded_normal(&p.size(), i as u64) * 0.3;
            let _ = p.shallow_clone().g_add_(&noise);
        }
    });
    let loss = method.loss(&fx.step(1, &indices), &batch).unwrap();
    let teacher = &method.previous.as_ref().unwrap().teacher;
    let features = fx.network.model.features(&batch.inputs, true);
    let lf = less_forget_loss(&features, &teacher.model.features(&batch.inputs, false));
    assert!(scalar(&lf) > 1e-4);
    // Old classes score with their embeddings as the task began.
    let fixed = method.embeddings(&weight);
    assert!(close(
        &fixed.narrow(0, 0, 2),
        &head_weight(teacher).unwrap().narrow(0, 0, 2)
    ));
    assert!(close(&fixed.narrow(0, 2, 8), &weight.narrow(0, 2, 8)));
    let scores = cosine_scores(&features, &fixed);
    let sigma = scalar(&fx.network.vars.variables()[SIGMA]);
    let expected = scalar(&(&scores * sigma).cross_entropy_for_logits(&batch.labels))
        + 5.0 * scalar(&lf)
        + scalar(&margin_ranking_loss(
            &scores,
            &batch.labels,
            &classes(&[0, 1]),
            &classes(&[2, 3]),
            2,
            0.5,
        ));
    assert!((scalar(&loss) - expected).abs() < 1e-5);
    // after_task puts the fixed old embeddings back into the head.
    method.after_task(&fx.task(1)).unwrap();
    let head = head_weight(&fx.network).unwrap();
    assert!(close(&head.narrow(0, 0, 2), &fixed.narrow(0, 0, 2)));
}

#[test]
fn class_balanced_fine_tuning_moves_only_the_class_embeddings() {
    let fx = Fixture::new();
    let mut method = Lucir::new(Params {
        memory_per_class: 5,
        cbf_epochs: 4,
        cbf_lr: 0.5,
        ..Params::default()
    })
    .unwrap();
    method.before_task(&fx.task(0)).unwrap();
    method.after_task(&fx.task(0)).unwrap();
    method.before_task(&fx.task(1)).unwrap();
    let before = retain_train::testkit::snapshot(&fx.network);
    method.after_task(&fx.task(1)).unwrap();
    let after = retain_train::testkit::snapshot(&fx.network);
    // Five exemplars of each of the four classes seen.
    assert_eq!(method.memory().len(), 4);
    assert!(method.memory().values().all(|v| v.len() == 5));
    for (name, value) in &before {
        let moved = !close(value, &after[name]);
        assert_eq!(moved, name == "head.weight", "{name}");
    }
}

#[test]
fn nearest_mean_scores_are_negative_squared_distances_to_exemplar_means() {
    let fx = Fixture::new();
    let mut method = cbf_off();
    assert!(method.supports_readout(Readout::Ncm));
    method.before_task(&fx.task(0)).unwrap();
    method.after_task(&fx.task(0)).unwrap();
    let (_, batch) = fx.batch(0, 4);
    let scores = method.ncm_scores(&fx.network, &batch.inputs).unwrap();
    assert_eq!(scores.size(), [4, 10]);
    // Classes without exemplars score -inf.
    let unseen = scores.narrow(1, 2, 8);
    assert!(bool::try_from(unseen.isinf().all()).unwrap());
    // Class 0's mean by hand.
    let indices = Tensor::from_slice(&method.memory()[&0]);
    let exemplars = fx.stream.batch(retain_stream::SplitKind::Train, &indices);
    let mean = normalize(
        &normalize(&fx.network.model.features(&exemplars.inputs, false)).mean_dim(
            0,
            true,
            Kind::Float,
        ),
    );
    let f = normalize(&fx.network.model.features(&batch.inputs, false));
    let expected = -(f - mean).square().sum_dim_intlist(1, false, Kind::Float);
    assert!(close(&scores.select(1, 0), &expected));
}

#[test]
fn state_round_trips_sigma_memory_and_means() {
    let fx = Fixture::new();
    let mut method = Lucir::new(Params {
        cbf_epochs: 2,
        ..Params::default()
    })
    .unwrap();
    assert!(method.state().is_empty());
    for t in 0..2 {
        method.before_task(&fx.task(t)).unwrap();
        method.after_task(&fx.task(t)).unwrap();
    }
    tch::no_grad(|| {
        let _ = fx.network.vars.variables()[SIGMA]
            .shallow_clone()
            .fill_(3.25);
    });
    let state = method.state();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "sigma",
            "memory.indices",
            "memory.classes",
            "means",
            "means.classes"
        ]
    );
    let mut restored = cbf_off();
    restored
        .load_state(
            state
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
        )
        .unwrap();
    assert_eq!(restored.memory(), method.memory());
    let again = restored.state();
    for ((a, x), (b, y)) in state.iter().zip(&again) {
        assert_eq!(a, b);
        assert!(x.equal(y), "{a}");
    }
    let (_, batch) = fx.batch(0, 6);
    assert!(close(
        &restored
            .ncm_scores(&fx.network, &batch.inputs)
            .unwrap()
            .nan_to_num(0.0, None, None),
        &method
            .ncm_scores(&fx.network, &batch.inputs)
            .unwrap()
            .nan_to_num(0.0, None, None)
    ));
    // σ goes back into a fresh network's variable when the next task binds it.
    let fresh = Fixture::new();
    restored.before_task(&fresh.task(2)).unwrap();
    assert_eq!(scalar(&fresh.network.vars.variables()[SIGMA]), 3.25);
    // The next task trains on its own samples and every exemplar.
    let indices = restored.training_indices(&fresh.task(2));
    assert_eq!(
        indices.len(),
        fresh.stream.tasks[2].train_indices.len() + 4 * 20
    );
    // Malformed states are refused, naming the tensor.
    let mut bad = cbf_off();
    let error = bad
        .load_state(vec![("teacher.x".into(), Tensor::from_slice(&[1.0f32]))])
        .unwrap_err()
        .to_string();
    assert!(error.contains("unexpected tensor `teacher.x`"), "{error}");
    let error = bad
        .load_state(vec![(STATE_INDICES.into(), Tensor::from_slice(&[1i64]))])
        .unwrap_err()
        .to_string();
    assert!(error.contains("come together"), "{error}");
}
