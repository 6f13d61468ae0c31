use super::*;
use retain_train::gradients;
use retain_train::testkit::{MethodFixture as Fixture, scalar, snapshot};

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double)).unwrap()
}

fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

fn rwalk(toml: &str) -> Rwalk {
    Rwalk::new(
        DESCRIPTOR
            .parse(&toml.parse::<toml::Table>().unwrap())
            .unwrap(),
    )
    .unwrap()
}

fn parameters(fx: &Fixture) -> Vec<Tensor> {
    fx.network
        .parameters()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// The flat gradient of the plain cross-entropy on the first `n` samples of `task`.
fn ce_gradient(fx: &Fixture, task: usize, n: usize) -> Tensor {
    let (indices, batch) = fx.batch(task, n);
    let ce = fx.step(task, &indices).cross_entropy(&batch);
    let params = parameters(fx);
    flatten(&gradients(&ce, &params).unwrap())
}

/// One training step as the trainer runs it (loss, zero_grad, backward, after_backward), then
/// plain SGD at `lr`; returns the loss.
fn sgd_step(fx: &Fixture, method: &mut Rwalk, task: usize, n: usize, lr: f64) -> f64 {
    let (indices, batch) = fx.batch(task, n);
    let ctx = fx.step(task, &indices);
    let loss = method.loss(&ctx, &batch).unwrap();
    let params = parameters(fx);
    for p in &params {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    loss.backward();
    method.after_backward(&ctx).unwrap();
    let _no_grad = tch::no_grad_guard();
    for p in &params {
        let g = p.grad();
        if g.defined() {
            let _ = p.shallow_clone().g_sub_(&(g * lr));
        }
    }
    scalar(&loss)
}

#[test]
fn ewc_plus_plus_follows_hand_made_gradient_steps() {
    let mut fisher = Tensor::zeros([2], (Kind::Float, Device::Cpu));
    let mut seen = Vec::new();
    for g in [[1.0f32, -2.0], [3.0, 0.0], [0.0, 1.0]] {
        fisher = ewc_plus_plus(&fisher, &Tensor::from_slice(&g), 0.5);
        seen.push(values(&fisher));
    }
    // 0.5·g² + 0.5·F: [0.5, 2], then [4.5 + 0.25, 0 + 1], then [0 + 2.375, 0.5 + 0.5].
    assert_eq!(seen, [vec![0.5, 2.0], vec![4.75, 1.0], vec![2.375, 1.0]]);
}

#[test]
fn the_hooks_update_the_running_fisher_from_each_steps_gradient() {
    let fx = Fixture::new();
    let mut method = rwalk("alpha = 0.5");
    method.before_task(&fx.task(0)).unwrap();
    assert!(values(method.fisher().unwrap()).iter().all(|&f| f == 0.0));
    let g0 = ce_gradient(&fx, 0, 8);
    sgd_step(&fx, &mut method, 0, 8, 0.1);
    let expected = &g0.square() * 0.5;
    assert!(close(
        &values(method.fisher().unwrap()),
        &values(&expected),
        1e-6
    ));
    // The second step's gradient at the updated parameters.
    let g1 = ce_gradient(&fx, 0, 6);
    sgd_step(&fx, &mut method, 0, 6, 0.1);
    let expected = g1.square() * 0.5 + expected * 0.5;
    assert!(close(
        &values(method.fisher().unwrap()),
        &values(&expected),
        1e-6
    ));
}

#[test]
fn path_score_of_one_interval_matches_hand_computation() {
    // Δℓ = −g ⊙ Δθ = [0.1, 0.6]; ½ F Δθ² + ε = [0.01 + 0.01, 0.18 + 0.01].
    let g = Tensor::from_slice(&[1.0f32, -2.0]);
    let moved = Tensor::from_slice(&[-0.1f32, 0.3]);
    let decrease = -(&g * &moved);
    let fisher = Tensor::from_slice(&[2.0f32, 4.0]);
    let score = values(&path_score(&decrease, &fisher, &moved, 0.01));
    assert!(close(&score, &[0.1 / 0.02, 0.6 / 0.19], 1e-6), "{score:?}");
}

#[test]
fn one_sgd_step_scores_as_computed_by_hand() {
    let fx = Fixture::new();
    let (alpha, lr, eps) = (0.5, 0.1, 1e-3);
    let mut method = rwalk(&format!(
        "alpha = {alpha}\nscore_interval = 1\nepsilon = {eps}"
    ));
    method.before_task(&fx.task(0)).unwrap();
    let g = values(&ce_gradient(&fx, 0, 8));
    sgd_step(&fx, &mut method, 0, 8, lr);
    method.after_task(&fx.task(0)).unwrap();
    // Δθ = −lr·g; Δℓ = −g·Δθ = lr·g²; F = α·g²; s = Δℓ / (½·F·Δθ² + ε).
    let expected: Vec<f64> = g
        .iter()
        .map(|g| lr * g * g / (0.5 * alpha * g * g * (lr * g).powi(2) + eps))
        .collect();
    assert!(close(&values(method.score().unwrap()), &expected, 1e-4));
    assert!(expected.iter().any(|&s| s > 0.0));
}

#[test]
fn an_interval_closes_every_score_interval_steps() {
    let fx = Fixture::new();
    let mut method = rwalk("score_interval = 2");
    method.before_task(&fx.task(0)).unwrap();
    sgd_step(&fx, &mut method, 0, 8, 0.1);
    sgd_step(&fx, &mut method, 0, 8, 0.1);
    // The second step's update is accounted at the third step, which closes the interval.
    assert!(
        values(method.task_score().unwrap())
            .iter()
            .all(|&s| s == 0.0)
    );
    sgd_step(&fx, &mut method, 0, 8, 0.1);
    assert!(
        values(method.task_score().unwrap())
            .iter()
            .any(|&s| s != 0.0)
    );
    let walk = method.walk.as_ref().unwrap();
    assert!(values(&walk.loss_decrease).iter().all(|&d| d == 0.0));
}

#[test]
fn exemplars_are_a_seeded_uniform_choice_per_class() {
    let indices: Vec<i64> = (100..140).collect();
    let labels: Vec<i64> = indices.iter().map(|i| i % 4).collect();
    let chosen = select_per_class(&indices, &labels, &[2, 0, 1], 3, 7);
    let counts: Vec<usize> = [2, 0, 1, 3]
        .iter()
        .map(|c| chosen.iter().filter(|&&i| i % 4 == *c).count())
        .collect();
    assert_eq!(counts, [3, 3, 3, 0]);
    // Class order, ascending within a class.
    assert!(chosen[..3].iter().all(|i| i % 4 == 2) && chosen[..3].is_sorted());
    assert_eq!(
        chosen,
        select_per_class(&indices, &labels, &[2, 0, 1], 3, 7)
    );
    let others: Vec<Vec<i64>> = (0..5)
        .map(|seed| select_per_class(&indices, &labels, &[2, 0, 1], 3, seed))
        .collect();
    assert!(others.iter().any(|o| *o != chosen));
    // Fewer samples than asked: all of them.
    assert_eq!(select_per_class(&[5, 6, 7], &[1, 0, 1], &[1], 3, 0), [5, 7]);
}

#[test]
fn after_a_task_the_memory_holds_samples_per_class_of_its_classes() {
    let fx = Fixture::new();
    let mut method = rwalk("samples_per_class = 3");
    let ctx = fx.task(0);
    method.before_task(&ctx).unwrap();
    method.after_task(&ctx).unwrap();
    let memory = method.memory().to_vec();
    assert_eq!(memory.len(), 6);
    for class in &fx.stream.tasks[0].classes {
        let n = memory
            .iter()
            .filter(|&&i| i64::from(fx.stream.label(SplitKind::Train, i)) == *class)
            .count();
        assert_eq!(n, 3);
    }
    assert!(
        memory
            .iter()
            .all(|i| fx.stream.tasks[0].train_indices.contains(i))
    );
    let next = fx.task(1);
    method.before_task(&next).unwrap();
    let indices = method.training_indices(&next);
    assert_eq!(indices.len(), fx.stream.tasks[1].train_indices.len() + 6);
    assert_eq!(&indices[indices.len() - 6..], memory.as_slice());
}

#[test]
fn penalty_value_and_gradient_match_hand_computation() {
    let fx = Fixture::new();
    let params = parameters(&fx);
    let theta = flatten(&params);
    let size = theta.size()[0];
    assert_eq!(size, 100); // 4·6 + 6 + 6·10 + 10
    // F/max F: 1 for the first 50 entries, 0.5 after; relu(s)/max: 0 for the first 10, 1
    // after. W: 1 (10 entries), 2 (40), 1.5 (50): Σ W = 165.
    let fisher = Tensor::cat(
        &[
            Tensor::full([50], 4.0, (Kind::Float, Device::Cpu)),
            Tensor::full([50], 2.0, (Kind::Float, Device::Cpu)),
        ],
        0,
    );
    let score = Tensor::cat(
        &[
            Tensor::full([10], -1.0, (Kind::Float, Device::Cpu)),
            Tensor::full([90], 2.0, (Kind::Float, Device::Cpu)),
        ],
        0,
    );
    let anchor = &theta - 0.5;
    let mut method = rwalk("lambda = 2.0");
    method
        .load_state(vec![
            ("fisher".into(), fisher),
            ("score".into(), score),
            ("anchor".into(), anchor),
        ])
        .unwrap();
    method.before_task(&fx.task(1)).unwrap();
    // λ Σ W (θ − θ*)² = 2 · 165 · 0.25.
    let penalty = scalar(&method.penalty(&params).unwrap());
    assert!((penalty - 82.5).abs() < 1e-4, "{penalty}");
    let (indices, batch) = fx.batch(1, 8);
    let ctx = fx.step(1, &indices);
    let loss = method.loss(&ctx, &batch).unwrap();
    let ce = ctx.cross_entropy(&batch);
    assert!((scalar(&loss) - scalar(&ce) - 82.5).abs() < 1e-4);
    // The added gradient is 2λ W (θ − θ*) = 2 W.
    let plain = ce_gradient(&fx, 1, 8);
    loss.backward();
    method.after_backward(&ctx).unwrap();
    let added = values(&(flat_grad(&params) - plain));
    let weights = values(method.weights().unwrap());
    let expected: Vec<f64> = weights.iter().map(|w| 2.0 * w).collect();
    assert!(close(&added, &expected, 1e-5));
    assert_eq!([weights[0], weights[10], weights[50]], [1.0, 2.0, 1.5]);
}

#[test]
fn bad_hyper_parameters_are_refused_naming_the_key() {
    let error = |toml: &str| {
        from_params(&toml.parse::<toml::Table>().unwrap())
            .err()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        error("lambda = -1.0"),
        "invalid hyper-parameters for method `rwalk`: `lambda` must be finite and ≥ 0, got -1"
    );
    assert!(error("alpha = 1.5").contains("`alpha` must be in [0, 1], got 1.5"));
    assert!(error("score_interval = 0").contains("`score_interval` must be at least 1"));
    assert!(error("epsilon = 0.0").contains("`epsilon` must be finite and > 0"));
    assert!(error("lamda = 1.0").contains("unknown key `lamda`"));
    assert!(error("samples_per_class = 100000000000000000").contains("samples_per_class"));
    let defaults = Params::default();
    assert_eq!(
        (
            defaults.lambda,
            defaults.alpha,
            defaults.score_interval,
            defaults.samples_per_class
        ),
        (0.1, 0.9, 10, 0)
    );
    assert_eq!(defaults.epsilon, f64::from(f32::EPSILON));
}

#[test]
fn a_fresh_instance_given_the_state_continues_identically() {
    let fx = Fixture::new();
    let toml = "lambda = 5.0\nalpha = 0.7\nscore_interval = 2\nsamples_per_class = 2";
    let mut first = rwalk(toml);
    first.before_task(&fx.task(0)).unwrap();
    for n in [8, 6, 4] {
        sgd_step(&fx, &mut first, 0, n, 0.1);
    }
    first.after_task(&fx.task(0)).unwrap();
    let state: Vec<(String, Tensor)> = first
        .state()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["fisher", "score", "anchor", "memory.indices"]);
    let start = snapshot(&fx.network);

    let continue_task = |method: &mut Rwalk| {
        let ctx = fx.task(1);
        method.before_task(&ctx).unwrap();
        let indices = method.training_indices(&ctx);
        let losses: Vec<f64> = [8, 6, 4, 8]
            .into_iter()
            .map(|n| sgd_step(&fx, method, 1, n, 0.1))
            .collect();
        method.after_task(&ctx).unwrap();
        let state: Vec<(String, Vec<f64>)> = method
            .state()
            .iter()
            .map(|(n, t)| (n.clone(), values(t)))
            .collect();
        (indices, losses, state)
    };
    let original = continue_task(&mut first);
    {
        let _no_grad = tch::no_grad_guard();
        for (name, mut var) in fx.network.vars.variables() {
            var.copy_(&start[&name]);
        }
    }
    let mut second = rwalk(toml);
    second.load_state(state).unwrap();
    let resumed = continue_task(&mut second);
    assert_eq!(original, resumed);
    assert!(original.1[0] > 0.0);
}

#[test]
fn a_state_of_the_wrong_size_is_refused_at_before_task() {
    let fx = Fixture::new();
    let mut method = rwalk("");
    let t = Tensor::zeros([7], (Kind::Float, Device::Cpu));
    method
        .load_state(vec![
            ("fisher".into(), t.copy()),
            ("score".into(), t.copy()),
            ("anchor".into(), t),
        ])
        .unwrap();
    let error = method.before_task(&fx.task(0)).err().unwrap().to_string();
    assert!(error.contains("network has 100 parameters"), "{error}");
    assert!(
        rwalk("")
            .load_state(vec![(
                "x".into(),
                Tensor::zeros([1], (Kind::Float, Device::Cpu))
            )])
            .is_err()
    );
}
