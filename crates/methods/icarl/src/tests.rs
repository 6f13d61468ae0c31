use super::*;
use retain_train::testkit::{MethodFixture as Fixture, scalar};

fn icarl(memory_size: usize) -> Icarl {
    Icarl::new(Params { memory_size }).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.flatten(0, -1).to_kind(Kind::Float)).unwrap()
}

#[test]
fn herding_picks_the_exemplar_that_keeps_the_running_mean_nearest_the_class_mean() {
    // Normalised rows: a=(1,0), b=(0,1), c=(0.6,0.8), d=(1,0), e=(0,1); μ = (0.52, 0.56).
    let features =
        Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 3.0, 4.0, 4.0, 0.0, 0.0, 2.0]).view([5, 2]);
    // k=1: ‖μ − φ‖² = 0.544 (a, d), 0.464 (b, e), 0.064 (c): c.
    // k=2: ‖μ − (φ + c)/2‖² = 0.104 (a, d), 0.164 (b, e): a, the lower of the tie.
    // k=3: (φ + a + c)/3 gives 0.0018 (b, e), 0.2062 (d): b.
    // k=4: (φ + a + b + c)/4 gives 0.029 (d), 0.034 (e): d; then e.
    assert_eq!(herding(&features, 5), [2, 0, 1, 3, 4]);
    // A smaller budget is a prefix; a larger one takes every row once.
    assert_eq!(herding(&features, 2), [2, 0]);
    assert_eq!(herding(&features, 9), [2, 0, 1, 3, 4]);
    assert_eq!(herding(&features, 0), Vec::<i64>::new());
}

#[test]
fn the_budget_per_class_is_the_memory_over_the_classes_seen() {
    assert_eq!(per_class(2000, 10).unwrap(), 200);
    assert_eq!(per_class(20, 3).unwrap(), 6);
    let error = per_class(5, 6).unwrap_err().to_string();
    assert!(error.contains("`memory_size` = 5"), "{error}");
}

#[test]
fn bce_with_distillation_matches_hand_computation() {
    // Seen classes {0, 1, 2} of 4 outputs, class 0 old, label 1. Logits (0, ln 3, 0, 9):
    // output 3 is unseen and ignored. Targets: σ(0) = 0.5 from the teacher on class 0, one-hot
    // on classes 1 and 2 (1, 0). BCE per output: ln 2 (σ(0) against 0.5), −ln 0.75 (σ(ln 3) =
    // 0.75 against 1), ln 2 (σ(0) against 0); mean over the 3.
    let logits = Tensor::from_slice(&[0.0f32, 3f32.ln(), 0.0, 9.0]).view([1, 4]);
    let teacher = Tensor::from_slice(&[0.0f32, 5.0, -5.0, 5.0]).view([1, 4]);
    let labels = Tensor::from_slice(&[1i64]);
    let eye = Tensor::eye(4, (Kind::Float, Device::Cpu));
    let seen = Tensor::from_slice(&[0i64, 1, 2]);
    let old = Tensor::from_slice(&[0i64]);
    let loss = scalar(&bce_distillation(
        &logits,
        &labels,
        &eye,
        &seen,
        Some((&teacher, &old)),
    ));
    let expected = (2.0 * 2f64.ln() - 0.75f64.ln()) / 3.0;
    assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
    // Without the teacher class 0's target is its one-hot 0: −ln(1 − σ(0)) = ln 2 too.
    let plain = scalar(&bce_distillation(&logits, &labels, &eye, &seen, None));
    assert!((plain - expected).abs() < 1e-6, "{plain}");
    // A teacher saying σ = 0.9 on class 0: −(0.9 ln 0.5 + 0.1 ln 0.5) = ln 2 still at z = 0;
    // at z_0 = ln 9 (σ = 0.9) the term is the entropy of 0.9.
    let logits = Tensor::from_slice(&[9f32.ln(), 3f32.ln(), 0.0, 9.0]).view([1, 4]);
    let teacher = Tensor::from_slice(&[9f32.ln(), 0.0, 0.0, 0.0]).view([1, 4]);
    let loss = scalar(&bce_distillation(
        &logits,
        &labels,
        &eye,
        &seen,
        Some((&teacher, &old)),
    ));
    let entropy = -(0.9 * 0.9f64.ln() + 0.1 * 0.1f64.ln());
    let expected = (entropy - 0.75f64.ln() + 2f64.ln()) / 3.0;
    assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
}

#[test]
fn ncm_scores_are_minus_the_distance_of_the_normalised_feature_to_each_mean() {
    let features = Tensor::from_slice(&[3.0f32, 4.0, 0.0, -2.0]).view([2, 2]);
    let means = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 0.0, 0.0]).view([3, 2]);
    let absent = Tensor::from_slice(&[false, false, true]);
    let scores = values(&ncm_scores(&features, &means, &absent));
    // φ = (0.6, 0.8): ‖φ − (1,0)‖ = √0.8, ‖φ − (0,1)‖ = √0.4. φ = (0, −1): √2 and 2.
    let inf = f32::NEG_INFINITY;
    let expected = [-0.8f32.sqrt(), -0.4f32.sqrt(), inf, -2f32.sqrt(), -2.0, inf];
    for (got, want) in scores.iter().zip(expected) {
        assert!(*got == want || (got - want).abs() < 1e-6, "{scores:?}");
    }
}

/// Trains nothing: runs `before_task` and `after_task` of tasks `0..tasks` on the fixture.
fn through(method: &mut Icarl, fx: &Fixture, tasks: usize) {
    for t in 0..tasks {
        method.before_task(&fx.task(t)).unwrap();
        method.after_task(&fx.task(t)).unwrap();
    }
}

#[test]
fn each_class_keeps_its_share_and_old_sets_shrink_to_a_prefix() {
    // The fixture: 5 tasks of 2 classes, 20 training samples per class.
    let fx = Fixture::new();
    let mut method = icarl(20);
    method.before_task(&fx.task(0)).unwrap();
    assert_eq!(
        method.training_indices(&fx.task(0)),
        fx.stream.tasks[0].train_indices
    );
    method.after_task(&fx.task(0)).unwrap();
    // Two classes seen: 10 each, chosen by herding on the network's features.
    assert_eq!(method.exemplar_counts(), [(0, 10), (1, 10)]);
    let labels = fx.stream.train_index_labels();
    for class in [0i64, 1] {
        let samples: Vec<i64> = fx.stream.tasks[0]
            .train_indices
            .iter()
            .copied()
            .filter(|&i| i64::from(labels[i as usize]) == class)
            .collect();
        let features = fx
            .network
            .model
            .features(&fx.task(0).train_batch(&samples).inputs, false);
        let herded: Vec<i64> = herding(&features, 10)
            .into_iter()
            .map(|p| samples[p as usize])
            .collect();
        assert_eq!(method.exemplars(class), herded);
    }
    let first: Vec<Vec<i64>> = (0..2).map(|c| method.exemplars(c).to_vec()).collect();
    // The next task trains on its samples and the 20 exemplars.
    method.before_task(&fx.task(1)).unwrap();
    let mut expected = fx.stream.tasks[1].train_indices.clone();
    expected.extend(first.iter().flatten());
    assert_eq!(method.training_indices(&fx.task(1)), expected);
    method.after_task(&fx.task(1)).unwrap();
    // Four classes: 5 each; the old sets are the first 5 of what they were.
    assert_eq!(method.exemplar_counts(), [(0, 5), (1, 5), (2, 5), (3, 5)]);
    for (class, set) in (0i64..).zip(&first) {
        assert_eq!(method.exemplars(class), &set[..5]);
    }
    // Six classes: 20 / 6 = 3 each.
    method.before_task(&fx.task(2)).unwrap();
    method.after_task(&fx.task(2)).unwrap();
    assert!(method.exemplar_counts().iter().all(|&(_, n)| n == 3));
    assert_eq!(method.exemplars(0), &first[0][..3]);
    // Too small a memory for the classes seen is an error naming the key.
    let mut small = icarl(3);
    through(&mut small, &fx, 1);
    small.before_task(&fx.task(1)).unwrap();
    let error = small.after_task(&fx.task(1)).unwrap_err().to_string();
    assert!(error.contains("`memory_size` = 3"), "{error}");
}

#[test]
fn class_means_are_the_normalised_means_of_the_exemplars_and_ncm_reads_them() {
    let fx = Fixture::new();
    let mut method = icarl(20);
    assert!(method.supports_readout(Readout::Ncm));
    assert!(method.supports_readout(Readout::ClassIl) && method.supports_readout(Readout::TaskIl));
    assert!(!method.supports_readout(Readout::Merged));
    let (_, batch) = fx.batch(0, 6);
    assert!(method.ncm_scores(&fx.network, &batch.inputs).is_none());
    through(&mut method, &fx, 1);
    let (means, absent) = method.class_means().unwrap();
    let (means, absent) = (means.shallow_clone(), absent.shallow_clone());
    assert_eq!(means.size()[0], 10);
    for class in 0..2i64 {
        let phi = normalize_rows(&fx.network.model.features(
            &fx.task(0).train_batch(method.exemplars(class)).inputs,
            false,
        ));
        let mean = normalize_rows(&phi.mean_dim([0].as_slice(), true, Kind::Float));
        let diff = scalar(&(means.get(class) - mean.squeeze_dim(0)).abs().max());
        assert!(diff < 1e-6, "{diff}");
    }
    assert_eq!(
        Vec::<bool>::try_from(&absent).unwrap(),
        [false, false, true, true, true, true, true, true, true, true]
    );
    let scores = method.ncm_scores(&fx.network, &batch.inputs).unwrap();
    assert_eq!(scores.size(), [6, 10]);
    let expected = ncm_scores(
        &fx.network.model.features(&batch.inputs, false),
        &means,
        &absent,
    );
    assert!(scores.allclose(&expected, 1e-6, 1e-6, false));
    let row = values(&scores.get(0));
    assert!(row[..2].iter().all(|s| s.is_finite() && *s <= 0.0));
    assert!(row[2..].iter().all(|&s| s == f32::NEG_INFINITY));
}

#[test]
fn the_loss_distils_the_teacher_on_old_classes_from_the_second_task() {
    let fx = Fixture::new();
    let mut method = icarl(20);
    method.before_task(&fx.task(0)).unwrap();
    let (indices, batch) = fx.batch(0, 8);
    let loss = scalar(&method.loss(&fx.step(0, &indices), &batch).unwrap());
    let eye = Tensor::eye(10, (Kind::Float, Device::Cpu));
    let logits = fx.network.model.forward_t(&batch.inputs, true);
    let first = Tensor::from_slice(&[0i64, 1]);
    let expected = scalar(&bce_distillation(
        &logits,
        &batch.labels,
        &eye,
        &first,
        None,
    ));
    assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
    method.after_task(&fx.task(0)).unwrap();
    // Move the model away from its copy: the teacher keeps the old outputs.
    {
        let _no_grad = tch::no_grad_guard();
        let mut bias = fx.network.vars.variables()["head.bias"].shallow_clone();
        let _ = bias.g_add_scalar_(1.0);
    }
    method.before_task(&fx.task(1)).unwrap();
    let (indices, batch) = fx.batch(1, 8);
    let loss = scalar(&method.loss(&fx.step(1, &indices), &batch).unwrap());
    let logits = fx.network.model.forward_t(&batch.inputs, true);
    let teacher = method
        .teacher()
        .unwrap()
        .model
        .forward_t(&batch.inputs, false);
    let seen = Tensor::from_slice(&[0i64, 1, 2, 3]);
    let old = Tensor::from_slice(&[0i64, 1]);
    let expected = scalar(&bce_distillation(
        &logits,
        &batch.labels,
        &eye,
        &seen,
        Some((&teacher, &old)),
    ));
    assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
    let undistilled = scalar(&bce_distillation(&logits, &batch.labels, &eye, &seen, None));
    assert!(
        (loss - undistilled).abs() > 1e-4,
        "the teacher changes the loss"
    );
}

#[test]
fn state_round_trips_exemplars_class_means_and_teacher() {
    let fx = Fixture::new();
    let mut method = icarl(20);
    assert!(method.state().is_empty());
    through(&mut method, &fx, 2);
    let state = method.state();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    for name in [CLASSES, COUNTS, INDICES, MEANS] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with(TEACHER)), "{names:?}");
    let mut loaded = icarl(20);
    loaded.load_state(state).unwrap();
    assert_eq!(loaded.exemplar_counts(), method.exemplar_counts());
    for c in 0..4 {
        assert_eq!(loaded.exemplars(c), method.exemplars(c));
    }
    // The same state out again, before the teacher is rebuilt and after.
    let same = |a: &Icarl, b: &Icarl| {
        let (sa, sb) = (a.state(), b.state());
        assert_eq!(sa.len(), sb.len());
        let sb: BTreeMap<_, _> = sb.into_iter().collect();
        for (name, t) in sa {
            assert!(t.equal(&sb[&name]), "{name} differs");
        }
    };
    same(&method, &loaded);
    // Move the network: the restored teacher is the saved copy, not the network.
    {
        let _no_grad = tch::no_grad_guard();
        let mut bias = fx.network.vars.variables()["head.bias"].shallow_clone();
        let _ = bias.g_add_scalar_(1.0);
    }
    method.before_task(&fx.task(2)).unwrap();
    loaded.before_task(&fx.task(2)).unwrap();
    same(&method, &loaded);
    let (indices, batch) = fx.batch(2, 8);
    let a = scalar(&method.loss(&fx.step(2, &indices), &batch).unwrap());
    let b = scalar(&loaded.loss(&fx.step(2, &indices), &batch).unwrap());
    assert_eq!(a, b);
    let (sa, sb) = (
        method.ncm_scores(&fx.network, &batch.inputs).unwrap(),
        loaded.ncm_scores(&fx.network, &batch.inputs).unwrap(),
    );
    assert!(sa.equal(&sb));
    assert_eq!(
        method.training_indices(&fx.task(2)),
        loaded.training_indices(&fx.task(2))
    );
    // An empty state is a method before its first task.
    loaded.load_state(Vec::new()).unwrap();
    assert!(loaded.state().is_empty() && loaded.exemplar_counts().is_empty());
}

#[test]
fn malformed_states_are_refused() {
    let fx = Fixture::new();
    let mut method = icarl(20);
    through(&mut method, &fx, 1);
    let state = method.state();
    let without = |name: &str| -> Vec<(String, Tensor)> {
        state
            .iter()
            .filter(|(n, _)| n != name)
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect()
    };
    let error = icarl(20)
        .load_state(without(MEANS))
        .unwrap_err()
        .to_string();
    assert!(error.contains("class_means"), "{error}");
    let no_teacher: Vec<_> = state
        .iter()
        .filter(|(n, _)| !n.starts_with(TEACHER))
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    let error = icarl(20).load_state(no_teacher).unwrap_err().to_string();
    assert!(error.contains("teacher"), "{error}");
    // More exemplars than the configured memory.
    let error = icarl(10).load_state(without("")).unwrap_err().to_string();
    assert!(error.contains("memory_size"), "{error}");
    let mut extra = without("");
    extra.push(("stray".into(), Tensor::from(1i64)));
    let error = icarl(20).load_state(extra).unwrap_err().to_string();
    assert!(error.contains("stray"), "{error}");
}

#[test]
fn bad_hyper_parameters_are_refused_naming_the_key() {
    let table = |s: &str| -> toml::Table { s.parse().unwrap() };
    let error = from_params(&table("memory_size = 0"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("`memory_size` must be at least 1"),
        "{error}"
    );
    let error = from_params(&table("memory_size = 1_000_000_000_000_000"))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("memory_size"), "{error}");
    let error = from_params(&table("memory = 10"))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("`memory`"), "{error}");
    let error = from_params(&table("memory_size = -1"))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("memory_size"), "{error}");
    assert_eq!(Params::default().memory_size, 2000);
    from_params(&table(DESCRIPTOR.example)).unwrap();
}
