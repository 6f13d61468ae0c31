use super::*;
use retain_train::testkit::{MethodFixture as Fixture, scalar, seeded_normal};

fn host(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn bic(toml: &str) -> Bic {
    let table: toml::Table = toml::from_str(toml).unwrap();
    Bic::new(DESCRIPTOR.parse(&table).unwrap()).unwrap()
}

fn softmax(z: &[f64], t: f64) -> Vec<f64> {
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| ((v - max) / t).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

#[test]
fn bias_layer_corrects_only_the_masked_classes() {
    let logits = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, -1.0, 0.5, 2.0, -2.0]).view([2, 4]);
    let mask = Tensor::from_slice(&[false, false, true, true]);
    let alpha = Tensor::from_slice(&[0.5f32]);
    let beta = Tensor::from_slice(&[-1.0f32]);
    let q = host(&bias_layer(&logits, &mask, &alpha, &beta));
    assert_eq!(q, vec![1.0, 2.0, 0.5, 1.0, -1.0, 0.5, 0.0, -2.0]);
    // The correction vectors spread each task's pair over its classes.
    let pairs = [
        BiasPair {
            classes: vec![0, 1],
            alpha: 1.0,
            beta: 0.0,
        },
        BiasPair {
            classes: vec![2, 3],
            alpha: 0.5,
            beta: -1.0,
        },
    ];
    let (scale, shift) = correction_vectors(&pairs, 4, Device::Cpu);
    assert_eq!(host(&(logits * scale + shift)), q);
}

#[test]
fn lambda_and_stage1_loss_match_hand_computation() {
    assert_eq!(distillation_weight(0, 2), 0.0);
    assert_eq!(distillation_weight(2, 2), 0.5);
    assert!((distillation_weight(6, 2) - 0.75).abs() < 1e-12);
    let new = [[1.0, -0.5], [0.2, 0.3]];
    let old = [[2.0, 0.0], [-1.0, 1.0]];
    let t = 2.0;
    let mut expected = 0.0;
    for b in 0..2 {
        let p = softmax(&old[b], t);
        let q = softmax(&new[b], t);
        expected -= (0..2).map(|k| p[k] * q[k].ln()).sum::<f64>() / 2.0;
    }
    let as_tensor = |m: [[f64; 2]; 2]| {
        Tensor::from_slice(&m.concat())
            .view([2, 2])
            .to_kind(Kind::Float)
    };
    let d = scalar(&distillation_loss(&as_tensor(new), &as_tensor(old), t));
    assert!((d - expected).abs() < 1e-6, "{d} vs {expected}");
    let l = scalar(&stage1_loss(
        Tensor::from(3.0f32),
        Some(Tensor::from(d as f32)),
        0.25,
    ));
    assert!((l - (0.25 * expected + 0.75 * 3.0)).abs() < 1e-5, "{l}");
}

#[test]
fn the_step_loss_is_lambda_weighted_distillation_plus_cross_entropy() {
    let fx = Fixture::new();
    let mut method = bic("memory_size = 40\nbias_epochs = 0");
    method.before_task(&fx.task(0)).unwrap();
    let (indices, batch) = fx.batch(0, 6);
    let loss = scalar(&method.loss(&fx.step(0, &indices), &batch).unwrap());
    let logits = fx.network.model.forward_t(&batch.inputs, true);
    assert!((loss - scalar(&logits.cross_entropy_for_logits(&batch.labels))).abs() < 1e-6);
    method.after_task(&fx.task(0)).unwrap();
    // Move the network away from the teacher, then task 1: λ = 2 / 4.
    method.before_task(&fx.task(1)).unwrap();
    {
        let _no_grad = tch::no_grad_guard();
        let mut bias = fx.network.vars.variables()["head.bias"].shallow_clone();
        let _ = bias.g_add_(&Tensor::from_slice(&[
            0.5f32, -0.5, 0., 0., 0., 0., 0., 0., 0., 0.,
        ]));
    }
    assert_eq!(method.lambda(), 0.5);
    let (indices, batch) = fx.batch(1, 6);
    let loss = scalar(&method.loss(&fx.step(1, &indices), &batch).unwrap());
    let logits = fx.network.model.forward_t(&batch.inputs, true);
    let ce = scalar(&logits.cross_entropy_for_logits(&batch.labels));
    let old = method
        .teacher()
        .unwrap()
        .model
        .forward_t(&batch.inputs, false);
    let old_classes = Tensor::from_slice(&[0i64, 1]);
    let new_rows = host(&logits.index_select(1, &old_classes));
    let old_rows = host(&old.index_select(1, &old_classes));
    let mut d = 0.0;
    for b in 0..6 {
        let p = softmax(&old_rows[2 * b..2 * b + 2], 2.0);
        let q = softmax(&new_rows[2 * b..2 * b + 2], 2.0);
        d -= (0..2).map(|k| p[k] * q[k].ln()).sum::<f64>() / 6.0;
    }
    let expected = 0.5 * d + 0.5 * ce;
    assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
}

#[test]
fn held_out_exemplars_are_never_trained_on() {
    let fx = Fixture::new();
    // 5 tasks of 2 classes, 20 samples per class per task.
    let mut method = bic("memory_size = 40\nval_fraction = 0.25\nbias_epochs = 3");
    let labels = fx.stream.train_index_labels();
    let mut all_held = std::collections::BTreeSet::new();
    for t in 0..5 {
        method.before_task(&fx.task(t)).unwrap();
        let seen = 2 * (t + 1);
        let per_class = 40 / seen;
        let held = (0.25 * per_class as f64).ceil() as usize;
        for class in &fx.stream.tasks[t].classes {
            let e = &method.memory()[class];
            assert_eq!(e.held_out.len(), held, "task {t} class {class}");
            assert!(
                e.held_out
                    .iter()
                    .all(|&i| i64::from(labels[i as usize]) == *class)
            );
        }
        all_held.extend(method.memory().values().flat_map(|e| e.held_out.clone()));
        let train = method.training_indices(&fx.task(t));
        assert!(train.iter().all(|i| !all_held.contains(i)), "task {t}");
        // The task's own samples less the held-out ones, and the old classes' training part.
        let old: usize = method
            .memory()
            .iter()
            .filter(|(c, _)| !fx.stream.tasks[t].classes.contains(c))
            .map(|(_, e)| e.train.len())
            .sum();
        assert_eq!(
            train.len(),
            fx.stream.tasks[t].train_indices.len() - 2 * held + old
        );
        method.after_task(&fx.task(t)).unwrap();
        for (class, e) in method.memory() {
            assert_eq!(
                e.train.len() + e.held_out.len().max(held),
                per_class,
                "class {class}"
            );
            assert!(e.train.iter().all(|i| !e.held_out.contains(i)));
        }
        assert_eq!(method.pairs().len(), t + 1);
    }
}

#[test]
fn stage2_learns_a_known_bias() {
    // Calibrated logits of four classes (labels drawn from their softmax by the Gumbel-max
    // trick), the two new classes' logits then shifted up by 3: the fit should undo the
    // shift, α ≈ 1 and β ≈ −3.
    let n = 2000i64;
    let clean = seeded_normal(&[n, 4], 7) * 1.5;
    let u = ((seeded_normal(&[n, 4], 8) / std::f64::consts::SQRT_2).erf() + 1.0) / 2.0;
    let u = u.clamp(1e-6, 1.0 - 1e-6);
    let gumbel = -(-u.log()).log();
    let y = (&clean + gumbel).argmax(1, false);
    let mask = Tensor::from_slice(&[false, false, true, true]);
    let shifted = &clean + mask.to_kind(Kind::Float) * 3.0;
    let accuracy = |z: &Tensor| {
        scalar(
            &z.argmax(1, false)
                .eq_tensor(&y)
                .to_kind(Kind::Float)
                .mean(Kind::Float),
        )
    };
    let fit = fit_bias(&shifted, &y, &mask, 100, 0.1, 128, 0.0, 1).unwrap();
    eprintln!("fitted α = {:.3}, β = {:.3}", fit.alpha, fit.beta);
    assert!((fit.alpha - 1.0).abs() < 0.15, "{fit:?}");
    assert!((fit.beta + 3.0).abs() < 0.4, "{fit:?}");
    let a = Tensor::from_slice(&[fit.alpha as f32]);
    let b = Tensor::from_slice(&[fit.beta as f32]);
    let corrected = bias_layer(&shifted, &mask, &a, &b);
    assert!(accuracy(&corrected) > accuracy(&shifted) + 0.1);
    assert!((accuracy(&corrected) - accuracy(&clean)).abs() < 0.03);
}

#[test]
fn eval_logits_apply_every_stored_pair() {
    let fx = Fixture::new();
    let mut method = bic("memory_size = 40");
    let (_, batch) = fx.batch(0, 4);
    let raw = fx.network.model.forward_t(&batch.inputs, false);
    // Before any task: the network's outputs.
    let before = method.eval_logits(&fx.network, &batch.inputs).unwrap();
    assert_eq!(host(&before), host(&raw));
    let state = vec![
        (MEMORY_TRAIN.to_owned(), rows(std::iter::empty())),
        (MEMORY_HELD_OUT.to_owned(), rows(std::iter::empty())),
        (
            BIAS_PAIRS.to_owned(),
            Tensor::from_slice(&[1.0f64, 0.0, 0.5, 1.0, 2.0, -1.0]).view([3, 2]),
        ),
        (
            BIAS_CLASSES.to_owned(),
            rows([(0, 0), (0, 1), (1, 2), (1, 3), (2, 4), (2, 5)].into_iter()),
        ),
    ];
    method.load_state(state).unwrap();
    let got = host(&method.eval_logits(&fx.network, &batch.inputs).unwrap());
    let raw = host(&raw);
    for (i, (g, r)) in got.iter().zip(&raw).enumerate() {
        let expected = match i % 10 {
            2 | 3 => 0.5 * r + 1.0,
            4 | 5 => 2.0 * r - 1.0,
            _ => *r,
        };
        assert!((g - expected).abs() < 1e-6, "{i}: {g} vs {expected}");
    }
}

#[test]
fn state_round_trips() {
    let fx = Fixture::new();
    let mut method = bic("memory_size = 40\nbias_epochs = 20\nbias_batch_size = 4");
    for t in 0..2 {
        method.before_task(&fx.task(t)).unwrap();
        let train = method.training_indices(&fx.task(t));
        let indices = Tensor::from_slice(&train[..8]);
        let batch = fx.stream.batch(retain_stream::SplitKind::Train, &indices);
        let _ = method.loss(&fx.step(t, &indices), &batch).unwrap();
        method.after_task(&fx.task(t)).unwrap();
    }
    // During task 2: a teacher, pairs for tasks 0–1 fitted, task 2's identity.
    method.before_task(&fx.task(2)).unwrap();
    assert_ne!(method.pairs()[1].alpha, 1.0);
    let state = method.state();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"memory.held_out") && names.iter().any(|n| n.starts_with("teacher.")));
    let mut restored = bic("memory_size = 40\nbias_epochs = 20\nbias_batch_size = 4");
    restored.load_state(state).unwrap();
    assert_eq!(restored.memory(), method.memory());
    assert_eq!(restored.pairs(), method.pairs());
    let again = restored.state();
    let original = method.state();
    assert_eq!(again.len(), original.len());
    for ((a, x), (b, y)) in again.iter().zip(&original) {
        assert_eq!(a, b);
        assert!(x.equal(y), "{a}");
    }
    // The restored method computes the same step loss and evaluation scores.
    let (indices, batch) = fx.batch(2, 6);
    let l0 = scalar(&method.loss(&fx.step(2, &indices), &batch).unwrap());
    let l1 = scalar(&restored.loss(&fx.step(2, &indices), &batch).unwrap());
    assert_eq!(l0, l1);
    assert_eq!(restored.lambda(), method.lambda());
    let e0 = method.eval_logits(&fx.network, &batch.inputs).unwrap();
    let e1 = restored.eval_logits(&fx.network, &batch.inputs).unwrap();
    assert!(e0.equal(&e1));
    // An empty state is a fresh method; a stray tensor is refused.
    restored.load_state(Vec::new()).unwrap();
    assert!(restored.pairs().is_empty() && restored.memory().is_empty());
    let err = restored
        .load_state(vec![("stray".into(), Tensor::from(1i64))])
        .unwrap_err()
        .to_string();
    assert!(err.contains("unexpected tensor `stray`"), "{err}");
}

#[test]
fn bad_hyper_parameters_are_refused_naming_the_key() {
    let table = |s: &str| -> toml::Table { s.parse().unwrap() };
    let params = Params::default();
    assert_eq!(
        (
            params.memory_size,
            params.val_fraction,
            params.temperature,
            params.bias_epochs
        ),
        (2000, 0.1, 2.0, 200)
    );
    assert_eq!(
        (params.bias_lr, params.bias_batch_size, params.beta_penalty),
        (0.1, 128, 0.1)
    );
    for (toml, key) in [
        ("memory_size = 0", "memory_size"),
        ("val_fraction = 0.0", "val_fraction"),
        ("val_fraction = 1.0", "val_fraction"),
        ("temperature = 0.0", "temperature"),
        ("bias_lr = -1.0", "bias_lr"),
        ("bias_batch_size = 0", "bias_batch_size"),
        ("beta_penalty = -0.1", "beta_penalty"),
        ("weight = 1.0", "weight"),
        ("memory_size = 1_000_000_000_000_000", "memory_size"),
    ] {
        let err = from_params(&table(toml)).err().unwrap().to_string();
        assert!(err.contains(key), "{toml}: {err}");
    }
    // A memory too small for the classes seen fails at the task naming the key.
    let fx = Fixture::new();
    let mut method = bic("memory_size = 3");
    let err = method.before_task(&fx.task(0)).unwrap_err().to_string();
    assert!(err.contains("memory_size"), "{err}");
    // The documented example parses.
    assert!(from_params(&table(DESCRIPTOR.example)).is_ok());
}
